//! HTTP classification and Retry-After through a real reqwest client against local servers
//! (features `http`, `reqwest`).
#![cfg(all(feature = "http", feature = "reqwest"))]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, StatusCode};
use resilience_runtime::http::{
    StatusError, class_of, is_failure, parse_retry_after, retry_after, retry_after_at,
};
use resilience_runtime::{Classify, ErrorClass};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server on 127.0.0.1:0 that answers every connection with `respond(n)` (the n-th connection);
/// `None` closes the connection without a response.
async fn serve(respond: impl Fn(usize) -> Option<String> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for n in 0..64 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            match respond(n) {
                Some(r) => {
                    let _ = s.write_all(r.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
                None => drop(s),
            }
        }
    });
    format!("http://{addr}/")
}

fn response(status: &str, headers: &[(&str, String)], body: &str) -> String {
    let mut r = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

#[test]
fn status_table() {
    for (s, class) in [
        (429, ErrorClass::Throttled),
        (500, ErrorClass::Transient),
        (502, ErrorClass::Transient),
        (503, ErrorClass::Transient),
        (504, ErrorClass::Transient),
        (400, ErrorClass::Permanent),
        (404, ErrorClass::Permanent),
        (409, ErrorClass::Permanent),
        (422, ErrorClass::Permanent),
        (401, ErrorClass::Auth),
        (403, ErrorClass::PolicyViolation),
    ] {
        let status = StatusCode::from_u16(s).unwrap();
        assert_eq!(class_of(status), class, "{s}");
        assert!(is_failure(status));
    }
    assert!(!is_failure(StatusCode::OK) && !is_failure(StatusCode::NOT_MODIFIED));
}

#[test]
fn retry_after_in_both_forms() {
    let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470); // Wed, 21 Oct 2015 07:27:50 GMT
    let cases = [
        ("120", Some(Duration::from_secs(120))),
        ("0", Some(Duration::ZERO)),
        ("1.5", Some(Duration::from_millis(1500))), // Graph sends fractional seconds
        ("0.050", Some(Duration::from_millis(50))),
        (" 7 ", Some(Duration::from_secs(7))),
        (
            "Wed, 21 Oct 2015 07:28:00 GMT",
            Some(Duration::from_secs(10)),
        ),
        (
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            Some(Duration::from_secs(10)),
        ), // RFC 850
        ("Wed Oct 21 07:28:00 2015", Some(Duration::from_secs(10))), // asctime
        ("Wed, 21 Oct 2015 07:00:00 GMT", Some(Duration::ZERO)),     // in the past
        ("-1", None),
        ("soon", None),
        ("", None),
        ("1.2.3", None),
        // Delta-seconds of any length: beyond a `Duration`, the longest wait there is.
        ("18446744073709551616", Some(Duration::MAX)),
        ("1000000000000000000000000000000", Some(Duration::MAX)),
        (
            "1000000000000",
            Some(Duration::from_secs(1_000_000_000_000)),
        ),
        // Not Retry-After forms: ignored.
        ("1e12", None),
        ("+5", None),
    ];
    for (v, want) in cases {
        assert_eq!(parse_retry_after(v, now), want, "{v:?}");
    }
    // The first parsable value of a repeated header wins.
    let mut h = HeaderMap::new();
    h.append(RETRY_AFTER, HeaderValue::from_static("later"));
    h.append(RETRY_AFTER, HeaderValue::from_static("3"));
    assert_eq!(retry_after_at(&h, now), Some(Duration::from_secs(3)));
    assert_eq!(retry_after(&HeaderMap::new()), None);
}

#[tokio::test]
async fn retry_after_read_from_a_real_response_in_both_forms() {
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let date2 = date.clone();
    let url = serve(move |n| {
        Some(match n {
            0 => response(
                "429 Too Many Requests",
                &[("retry-after", "1.5".into())],
                "",
            ),
            _ => response(
                "503 Service Unavailable",
                &[("retry-after", date.clone())],
                "",
            ),
        })
    })
    .await;
    let client = reqwest::Client::new();

    let r = client.get(&url).send().await.unwrap();
    let e = StatusError::from_parts(r.status(), r.headers()).unwrap();
    assert_eq!(e.class(), ErrorClass::Throttled);
    assert_eq!(e.code(), Some("429"));
    assert_eq!(e.retry_after(), Some(Duration::from_millis(1500)));

    let r = client.get(&url).send().await.unwrap();
    let before = SystemTime::now();
    let e = StatusError::from_parts(r.status(), r.headers()).unwrap();
    let after = SystemTime::now();
    let wait = e.retry_after().unwrap();
    // The wait is the date less the time it was read, between `before` and `after`.
    let at = httpdate::parse_http_date(&date2).unwrap();
    let (most, least) = (
        at.duration_since(before).unwrap(),
        at.duration_since(after).unwrap(),
    );
    assert!(
        wait >= least && wait <= most,
        "{least:?} <= {wait:?} <= {most:?}"
    );
}

#[tokio::test]
async fn reqwest_errors_are_classified_by_what_failed() {
    // Only the silent server's client has a short timeout: the others must not time out on a
    // loaded machine.
    let client = reqwest::Client::new();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();

    // Connection refused: a port bound but not listening, held until the connect is refused, so
    // nothing else can take it meanwhile.
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = refusing.local_addr().unwrap();
    let e = client
        .get(format!("http://{closed}/"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    assert_eq!(
        (e.class(), e.code()),
        (ErrorClass::Transient, Some("connect"))
    );
    drop(refusing);

    // Timeout: the server accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (_s, _) = silent.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let e = impatient
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    assert_eq!(
        (e.class(), e.code()),
        (ErrorClass::Transient, Some("timeout"))
    );
    hold.abort();

    // Connection closed before a response (reset by the peer).
    let url = serve(|_| None).await;
    let e = client.get(&url).send().await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient, "{e:?}");

    // A body that is not the JSON the connector expects: permanent.
    let url = serve(|_| {
        Some(response(
            "200 OK",
            &[("content-type", "application/json".into())],
            "<html>",
        ))
    })
    .await;
    let e = client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap_err();
    assert!(e.is_decode(), "{e:?}");
    assert_eq!(
        (e.class(), e.code()),
        (ErrorClass::Permanent, Some("decode"))
    );

    // Statuses through `error_for_status`: by the table.
    let url = serve(|n| {
        Some(match n {
            0 => response("503 Service Unavailable", &[], ""),
            1 => response("404 Not Found", &[], ""),
            2 => response("401 Unauthorized", &[], ""),
            _ => response("403 Forbidden", &[], ""),
        })
    })
    .await;
    for (class, code) in [
        (ErrorClass::Transient, "503"),
        (ErrorClass::Permanent, "404"),
        (ErrorClass::Auth, "401"),
        (ErrorClass::PolicyViolation, "403"),
    ] {
        let e = client
            .get(&url)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap_err();
        assert_eq!((e.class(), e.code()), (class, Some(code)));
    }

    // A request that cannot be built: permanent.
    let e = client.get("http://[::1").build().unwrap_err();
    assert_eq!(
        (e.class(), e.code()),
        (ErrorClass::Permanent, Some("builder"))
    );
}

/// A hint beyond the longest wait honoured ends the call at once as `retry_after_too_long`,
/// however many digits it has; it is never dropped for the normal backoff.
#[tokio::test(start_paused = true)]
async fn a_retry_after_too_long_for_any_clock_ends_the_call_at_once() {
    use resilience_runtime::Registry;
    use resilience_runtime::engine::{Hooks, Policy, Site, execute};
    use resilience_runtime::events::{self, EventSink, GiveUpReason, RuntimeEvent};
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Default)]
    struct Reasons(Mutex<Vec<GiveUpReason>>);
    impl EventSink for Reasons {
        fn on_event(&self, e: &RuntimeEvent<'_>) {
            if let RuntimeEvent::GaveUp {
                operation: "too_long",
                reason,
                ..
            } = e
            {
                self.0.lock().unwrap().push(*reason);
            }
        }
    }
    static SITE: Site = Site::new(
        &Policy::new("too_long", module_path!())
            .with_retries(3)
            .idempotent(),
    );
    let reasons = Arc::new(Reasons::default());
    let sink: Arc<dyn EventSink> = reasons.clone();
    events::add_sink(sink.clone());
    for hint in [
        "18446744073709551616",
        "99999999999999999999999999",
        "1000000000000",
    ] {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static(hint));
        let start = tokio::time::Instant::now();
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let r = Registry::new()
            .scope(execute(&SITE, Hooks::new(), || {
                attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let e = StatusError::from_parts(StatusCode::SERVICE_UNAVAILABLE, &h).unwrap();
                async move { Err::<(), _>(e) }
            }))
            .await;
        assert!(r.is_err(), "{hint}");
        assert_eq!(attempts.into_inner(), 1, "{hint}: not retried");
        assert_eq!(start.elapsed(), Duration::ZERO, "{hint}: no wait");
    }
    events::remove_sink(&sink);
    assert_eq!(
        *reasons.0.lock().unwrap(),
        [GiveUpReason::RetryAfterTooLong; 3]
    );
}

/// A credential in a URL's query reaches no output through an error the connector wraps.
#[tokio::test]
async fn an_access_token_in_the_query_is_stripped_from_a_wrapped_error() {
    #[derive(Debug, thiserror::Error)]
    enum ConnectorError {
        #[error(transparent)]
        Network(reqwest::Error),
    }
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = refusing.local_addr().unwrap();
    let e = reqwest::Client::new()
        .get(format!(
            "http://{addr}/v1.0/devices?access_token=s3cr3t-t0ken&$top=5#frag"
        ))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{e} {e:?}").contains("s3cr3t-t0ken"),
        "reqwest prints it"
    );
    let wrapped = ConnectorError::Network(resilience_runtime::http::without_query(e));
    let shown = format!("{wrapped} {wrapped:?}");
    assert!(!shown.contains("s3cr3t-t0ken"), "{shown}");
    assert!(!shown.contains("frag"), "{shown}");
    assert!(shown.contains("/v1.0/devices"), "the path stays: {shown}");
    assert!(!wrapped.to_string().contains("access_token"));
    drop(refusing);
}
