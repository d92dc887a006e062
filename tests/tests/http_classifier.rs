//! `http::Classifier`: a response's status and headers to a class and a wait, through a
//! `#[resilient]` call (a derive variant with a `#[connector(verdict)]` field), on a paused clock.
//! Waits measured from the system clock are read at a fixed `now` (`classify_at`), so they are
//! exact.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::http::{Classifier, Hint, Rule, StatusError, Verdict};
use resilience_runtime::{Classify, ConnectorError, ErrorClass, Registry, Rejected, resilient};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error("http {}", .0.status())]
    Http(#[connector(verdict)] Verdict),
    #[error("http {status}")]
    #[connector(status = status)]
    Status { status: StatusCode },
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

/// Tue, 14 Nov 2023 22:13:20 GMT: the system clock's "now" of every verdict below.
const NOW_SECS: u64 = 1_700_000_000;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// The first attempt gets `status` and `headers`, classified by `classifier` at [`now`]; the
/// second succeeds.
#[resilient(retries = 1, idempotent, jitter = "none", breaker = "api")]
async fn fetch(
    runs: &AtomicU32,
    classifier: &Classifier,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<u32, ApiError> {
    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(ApiError::Http(classifier.classify_at(
            status,
            headers,
            now(),
        )));
    }
    Ok(200)
}

/// Runs [`fetch`] in a registry whose breaker opens on one failure: its result, the time it took
/// and the attempts it made. The breaker must still be closed after it.
async fn run(
    classifier: &Classifier,
    status: StatusCode,
    headers: &HeaderMap,
) -> (Result<u32, ApiError>, Duration, u32) {
    let registry = Registry::new();
    registry
        .configure_breaker("api", BreakerConfig::new().with_failure_threshold(1))
        .unwrap();
    let runs = AtomicU32::new(0);
    let start = Instant::now();
    let r = registry
        .scope(fetch(&runs, classifier, status, headers))
        .await;
    let elapsed = start.elapsed();
    assert_eq!(registry.breaker("api").state(), BreakerState::Closed);
    (r, elapsed, runs.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn github_primary_rate_limit_403_waits_until_x_ratelimit_reset() {
    let h = headers(&[
        ("x-ratelimit-limit", "5000".into()),
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-reset", (NOW_SECS + 42).to_string()),
    ]);
    let v = Classifier::github().classify_at(StatusCode::FORBIDDEN, &h, now());
    assert_eq!(
        (v.class(), v.retry_after(), v.status()),
        (
            ErrorClass::Throttled,
            Some(Duration::from_secs(42)),
            StatusCode::FORBIDDEN
        )
    );
    let (r, elapsed, runs) = run(&Classifier::github(), StatusCode::FORBIDDEN, &h).await;
    assert_eq!(
        (r.unwrap(), elapsed, runs),
        (200, Duration::from_secs(42), 2)
    );
    // The same through a 429.
    let (r, elapsed, _) = run(&Classifier::github(), StatusCode::TOO_MANY_REQUESTS, &h).await;
    assert_eq!((r.unwrap(), elapsed), (200, Duration::from_secs(42)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn github_secondary_rate_limit_403_waits_its_retry_after() {
    let h = headers(&[
        ("retry-after", "30".into()),
        ("x-ratelimit-remaining", "17".into()),
    ]);
    let (r, elapsed, runs) = run(&Classifier::github(), StatusCode::FORBIDDEN, &h).await;
    assert_eq!(
        (r.unwrap(), elapsed, runs),
        (200, Duration::from_secs(30), 2)
    );
    // Where both limits answer, `retry-after` wins, as GitHub's documentation orders them.
    let both = headers(&[
        ("retry-after", "30".into()),
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-reset", (NOW_SECS + 600).to_string()),
    ]);
    let v = Classifier::github().classify_at(StatusCode::FORBIDDEN, &both, now());
    assert_eq!(v.retry_after(), Some(Duration::from_secs(30)));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn github_429_without_either_header_waits_a_minute() {
    let (r, elapsed, runs) = run(
        &Classifier::github(),
        StatusCode::TOO_MANY_REQUESTS,
        &HeaderMap::new(),
    )
    .await;
    assert_eq!(
        (r.unwrap(), elapsed, runs),
        (200, Duration::from_secs(60), 2)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_reset_in_the_past_is_a_zero_hint_so_the_backoff_decides() {
    let h = headers(&[
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-reset", (NOW_SECS - 10).to_string()),
    ]);
    let v = Classifier::github().classify_at(StatusCode::FORBIDDEN, &h, now());
    assert_eq!(
        (v.class(), v.retry_after()),
        (ErrorClass::Throttled, Some(Duration::ZERO))
    );
    let (r, elapsed, runs) = run(&Classifier::github(), StatusCode::FORBIDDEN, &h).await;
    // The backoff's first delay: 1 s, no jitter.
    assert_eq!(
        (r.unwrap(), elapsed, runs),
        (200, Duration::from_secs(1), 2)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_reset_beyond_the_clock_ends_the_call_at_once_as_too_long() {
    let h = headers(&[
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-reset", "99999999999999999999999999".into()),
    ]);
    let v = Classifier::github().classify_at(StatusCode::FORBIDDEN, &h, now());
    assert_eq!(v.retry_after(), Some(Duration::MAX));
    let (r, elapsed, runs) = run(&Classifier::github(), StatusCode::FORBIDDEN, &h).await;
    match r {
        Err(ApiError::Http(v)) => assert_eq!(v.class(), ErrorClass::Throttled),
        other => panic!("{other:?}"),
    }
    assert_eq!((elapsed, runs), (Duration::ZERO, 1));
    // Not digits: ignored, so the backoff decides.
    let h = headers(&[
        ("x-ratelimit-remaining", "0".into()),
        ("x-ratelimit-reset", "soon".into()),
    ]);
    let v = Classifier::github().classify_at(StatusCode::FORBIDDEN, &h, now());
    assert_eq!((v.class(), v.retry_after()), (ErrorClass::Throttled, None));
}

static FORBIDDEN_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, breaker = "github_policy")]
async fn delete_repo(headers: &HeaderMap) -> Result<u32, ApiError> {
    FORBIDDEN_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Http(Classifier::github().classify_at(
        StatusCode::FORBIDDEN,
        headers,
        now(),
    )))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_plain_403_stays_a_policy_violation() {
    let registry = Registry::new();
    registry
        .configure_breaker(
            "github_policy",
            BreakerConfig::new().with_failure_threshold(1),
        )
        .unwrap();
    // Without rate-limit headers, and with requests left.
    let plain = HeaderMap::new();
    let left = headers(&[("x-ratelimit-remaining", "4999".into())]);
    let start = Instant::now();
    for h in [&plain, &left] {
        let r = registry.scope(delete_repo(h)).await;
        match r {
            Err(ApiError::Http(v)) => {
                assert_eq!(
                    (v.class(), v.retry_after()),
                    (ErrorClass::PolicyViolation, None)
                )
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(FORBIDDEN_RUNS.load(Ordering::SeqCst), 2, "never retried");
    assert_eq!(
        registry.breaker("github_policy").state(),
        BreakerState::Closed
    );
    let m = registry.metrics();
    assert_eq!(
        m.site("delete_repo")
            .unwrap()
            .metrics
            .errors
            .policy_violation,
        2
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn graph_429_with_retry_after_in_seconds_and_as_a_date() {
    let h = headers(&[("retry-after", "3".into())]);
    let (r, elapsed, runs) = run(&Classifier::graph(), StatusCode::TOO_MANY_REQUESTS, &h).await;
    assert_eq!(
        (r.unwrap(), elapsed, runs),
        (200, Duration::from_secs(3), 2)
    );

    // 20 s after `now`.
    let h = headers(&[("retry-after", "Tue, 14 Nov 2023 22:13:40 GMT".into())]);
    let v = Classifier::graph().classify_at(StatusCode::TOO_MANY_REQUESTS, &h, now());
    assert_eq!(
        (v.class(), v.retry_after()),
        (ErrorClass::Throttled, Some(Duration::from_secs(20)))
    );
    let (r, elapsed, _) = run(&Classifier::graph(), StatusCode::TOO_MANY_REQUESTS, &h).await;
    assert_eq!((r.unwrap(), elapsed), (200, Duration::from_secs(20)));

    // A 503 with Retry-After stays transient, its hint honoured.
    let h = headers(&[("retry-after", "4".into())]);
    let v = Classifier::graph().classify_at(StatusCode::SERVICE_UNAVAILABLE, &h, now());
    assert_eq!(
        (v.class(), v.retry_after()),
        (ErrorClass::Transient, Some(Duration::from_secs(4)))
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn slack_429_with_retry_after() {
    let h = headers(&[("retry-after", "30".into())]);
    let v = Classifier::slack().classify_at(StatusCode::TOO_MANY_REQUESTS, &h, now());
    assert_eq!(
        (v.class(), v.retry_after()),
        (ErrorClass::Throttled, Some(Duration::from_secs(30)))
    );
    let (r, elapsed, runs) = run(&Classifier::slack(), StatusCode::TOO_MANY_REQUESTS, &h).await;
    assert_eq!(
        (r.unwrap(), elapsed, runs),
        (200, Duration::from_secs(30), 2)
    );
    // Slack's 403 is not a rate limit: a policy violation, as in the table.
    let v = Classifier::slack().classify_at(StatusCode::FORBIDDEN, &h, now());
    assert_eq!(v.class(), ErrorClass::PolicyViolation);
}

#[test]
fn a_rule_of_your_own_is_consulted_before_the_table() {
    let c = Classifier::new().with_rule(
        Rule::new([StatusCode::SERVICE_UNAVAILABLE], ErrorClass::Throttled)
            .with_header_eq(
                HeaderName::from_static("x-shed"),
                HeaderValue::from_static("client"),
            )
            .with_hint(Hint::ResetAt(HeaderName::from_static("x-shed-until"))),
    );
    let shed = headers(&[
        ("x-shed", " client ".into()),
        ("x-shed-until", (NOW_SECS + 9).to_string()),
    ]);
    let v = c.classify_at(StatusCode::SERVICE_UNAVAILABLE, &shed, now());
    assert_eq!(
        (v.class(), v.retry_after()),
        (ErrorClass::Throttled, Some(Duration::from_secs(9)))
    );
    let other = headers(&[("x-shed", "server".into())]);
    let v = c.classify_at(StatusCode::SERVICE_UNAVAILABLE, &other, now());
    assert_eq!((v.class(), v.retry_after()), (ErrorClass::Transient, None));
    // The classifier's error: `None` for a success, the verdict for a failure.
    assert_eq!(c.error(StatusCode::OK, &shed), None);
    let e: StatusError = c.error(StatusCode::SERVICE_UNAVAILABLE, &other).unwrap();
    assert_eq!(
        (e.class(), e.code(), e.verdict().status()),
        (
            ErrorClass::Transient,
            Some("503"),
            StatusCode::SERVICE_UNAVAILABLE
        )
    );
}

#[test]
fn a_verdict_variant_takes_class_hint_and_code_from_its_field() {
    let v = Verdict::new(StatusCode::TOO_MANY_REQUESTS, ErrorClass::Throttled)
        .with_retry_after(Some(Duration::from_secs(5)));
    let e = ApiError::Http(v);
    assert_eq!(
        (e.class(), e.retry_after(), e.code()),
        (
            ErrorClass::Throttled,
            Some(Duration::from_secs(5)),
            Some("429")
        )
    );
}

#[test]
fn a_status_field_may_be_a_status_code() {
    for (status, class) in [
        (StatusCode::TOO_MANY_REQUESTS, ErrorClass::Throttled),
        (StatusCode::BAD_GATEWAY, ErrorClass::Transient),
        (StatusCode::NOT_FOUND, ErrorClass::Permanent),
        (StatusCode::UNAUTHORIZED, ErrorClass::Auth),
        (StatusCode::FORBIDDEN, ErrorClass::PolicyViolation),
    ] {
        let e = ApiError::Status { status };
        assert_eq!(e.class(), class, "{status}");
        assert_eq!(e.code(), Some(status.as_str()));
    }
}
