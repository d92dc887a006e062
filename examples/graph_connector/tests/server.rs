//! The embedded server speaks the contract and records what it saw. Plain reqwest over loopback,
//! no connector.

use std::time::{Duration, SystemTime};

use graph_connector::server::{FaultKind, GraphServer, ServerConfig, TokenExpiry};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn only(kind: FaultKind) -> ServerConfig {
    let mut c = ServerConfig::new().with_faults(1.0, 1);
    for k in FaultKind::RANDOM {
        c = c.with_fault_weight(k, u32::from(k == kind));
    }
    c
}

async fn token(http: &reqwest::Client, base: &str, client: &str) -> String {
    let v: Value = http
        .post(format!("{base}/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=client_credentials&client_id={client}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["expires_in"].as_u64().unwrap() > 0);
    v["access_token"].as_str().unwrap().to_owned()
}

fn body(device: &str, app: &str) -> Value {
    json!({"intent_id": format!("intent-{device}"), "device_id": device, "app_id": app})
}

async fn create(
    http: &reqwest::Client,
    base: &str,
    tok: &str,
    device: &str,
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut rb = http
        .post(format!("{base}/v1.0/assignments"))
        .bearer_auth(tok)
        .json(&body(device, "app-1"));
    if let Some(k) = key {
        rb = rb.header("Idempotency-Key", k);
    }
    rb.send().await
}

#[tokio::test]
async fn devices_are_paginated_with_absolute_next_links() {
    let server = GraphServer::start(ServerConfig::new().with_devices(25).with_max_page_size(10))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let mut url = format!("{}/v1.0/devices?$top=50", server.base_url());
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let v: Value = http
            .get(&url)
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        for d in v["value"].as_array().unwrap() {
            ids.push(d["id"].as_str().unwrap().to_owned());
        }
        match v["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(next.starts_with(server.base_url()), "{next}");
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3, "pages are capped at 10");
    assert_eq!(ids.len(), 25);
    assert_eq!(ids.first().map(String::as_str), Some("dev-0001"));
    assert_eq!(ids.last().map(String::as_str), Some("dev-0025"));
}

#[tokio::test]
async fn unknown_and_expired_tokens_get_401_and_refreshes_are_recorded() {
    let server =
        GraphServer::start(ServerConfig::new().with_token_expiry(TokenExpiry::after_requests(2)))
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v1.0/devices", server.base_url());
    let r = http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "InvalidAuthenticationToken");

    let t1 = token(&http, server.base_url(), "c1").await;
    for _ in 0..2 {
        let r = http.get(&url).bearer_auth(&t1).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = http.get(&url).bearer_auth(&t1).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let t2 = token(&http, server.base_url(), "c1").await;
    // A second refresh while t2 is still good is needless.
    let t3 = token(&http, server.base_url(), "c1").await;
    assert_ne!(t2, t3);

    let rec = server.records();
    assert_eq!(rec.token_issues.len(), 3);
    assert_eq!(rec.refreshes(), 2);
    assert!(rec.expired_tokens.contains(&t1));
    let needless = rec.needless_token_issues();
    assert_eq!(needless.len(), 1);
    assert_eq!(needless[0].token, t3);
    let notes: Vec<_> = rec.requests.iter().filter_map(|r| r.note).collect();
    assert_eq!(notes, ["unknown_token", "expired_token"]);
}

#[tokio::test]
async fn a_key_creates_once_and_conflicts_with_the_existing_location() {
    let server = GraphServer::start(ServerConfig::new().with_consistency_delay(Duration::ZERO))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let key = "intent-dev-0001-create-assignment";

    let r = create(&http, server.base_url(), &tok, "dev-0001", Some(key))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = r.json().await.unwrap();
    assert!(location.ends_with(created["id"].as_str().unwrap()));

    let r = create(&http, server.base_url(), &tok, "dev-0001", Some(key))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers()["location"].to_str().unwrap(), location);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Conflict");

    let r = http.get(&location).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["id"], created["id"]);

    let rec = server.records();
    assert_eq!(rec.creates.len(), 1);
    assert!(rec.duplicates().is_empty());
    assert_eq!(rec.creates[0].idempotency_key.as_deref(), Some(key));
}

#[tokio::test]
async fn creates_without_a_key_are_seen_as_duplicates() {
    let server = GraphServer::start(ServerConfig::new()).await.unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    for _ in 0..2 {
        let r = create(&http, server.base_url(), &tok, "dev-0002", None)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let dups = server.records().duplicates();
    assert_eq!(dups.len(), 1);
    assert_eq!(dups[0].device_id, "dev-0002");
    assert_eq!(dups[0].ids.len(), 2);
}

#[tokio::test]
async fn reads_are_404_until_the_assignment_is_visible() {
    let server =
        GraphServer::start(ServerConfig::new().with_consistency_delay(Duration::from_secs(3600)))
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let r = create(&http, server.base_url(), &tok, "dev-0001", Some("k1"))
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let r = http.get(&location).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = http
        .get(format!("{}/v1.0/assignments/asg-999999", server.base_url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let notes: Vec<_> = server
        .records()
        .requests
        .iter()
        .filter_map(|r| r.note)
        .collect();
    assert_eq!(notes, ["not_yet_visible", "not_found"]);
}

#[tokio::test]
async fn policy_apps_are_forbidden() {
    let server = GraphServer::start(ServerConfig::new().with_policy_app("app-blocked"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let r = http
        .post(format!("{}/v1.0/assignments", server.base_url()))
        .bearer_auth(&tok)
        .header("Idempotency-Key", "k")
        .json(&json!({"intent_id": "i", "device_id": "dev-0001", "app_id": "app-blocked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "Forbidden");
    assert!(server.records().creates.is_empty());
}

#[tokio::test]
async fn throttling_in_seconds_records_requests_sent_too_early() {
    // A minute's wait: the second request is early however slowly the machine runs. The
    // throttle window's grace is as long, so the server still answers it.
    let server = GraphServer::start(
        only(FaultKind::ThrottledSeconds)
            .with_max_faults_per_operation(1)
            .with_retry_after(Duration::from_secs(60))
            .with_throttle_grace(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let url = format!("{}/v1.0/devices", server.base_url());
    let r = http.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "60");
    // At once, ignoring the Retry-After: the server sees it.
    let r = http.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "one fault in a row at most");
    let rec = server.records();
    assert_eq!(rec.retry_afters_given(), 1);
    let early = rec.early_requests();
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].attempt, 2);
    let (_, not_before) = rec.requests[0..early[0].seq as usize]
        .iter()
        .find_map(|r| r.retry_after.clone())
        .unwrap();
    assert_eq!(
        early[0].early_by,
        not_before.duration_since(early[0].at).ok(),
        "early by the time left until the Retry-After passed"
    );
}

#[tokio::test]
async fn throttling_with_a_date_asks_for_a_future_instant() {
    let server = GraphServer::start(only(FaultKind::ThrottledDate))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let r = http
        .get(format!("{}/v1.0/devices", server.base_url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let date = httpdate::parse_http_date(r.headers()["retry-after"].to_str().unwrap()).unwrap();
    let rec = server.records();
    let throttled = rec
        .requests
        .iter()
        .find(|r| r.retry_after.is_some())
        .unwrap();
    assert_eq!(throttled.retry_after.as_ref().unwrap().1, date);
    // The configured second after the request arrived, rounded up to a whole second (an
    // HTTP-date's resolution).
    let ahead = date.duration_since(throttled.at).unwrap();
    assert!(ahead >= Duration::from_secs(1), "{ahead:?}");
    assert_eq!(
        date.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos(),
        0
    );
    assert_eq!(throttled.fault, Some(FaultKind::ThrottledDate));
}

#[tokio::test]
async fn server_errors_carry_graph_error_bodies() {
    for (kind, status) in [
        (FaultKind::Unavailable, 503),
        (FaultKind::Internal, 500),
        (FaultKind::GatewayTimeout, 504),
    ] {
        let server = GraphServer::start(only(kind)).await.unwrap();
        let http = reqwest::Client::new();
        let tok = token(&http, server.base_url(), "c1").await;
        let r = http
            .get(format!("{}/v1.0/devices", server.base_url()))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"]["code"].is_string());
        assert_eq!(server.records().faults()[&kind], 1);
    }
}

#[tokio::test]
async fn a_slow_answer_outlasts_the_client_timeout() {
    let server =
        GraphServer::start(only(FaultKind::Slow).with_slow_response(Duration::from_secs(30)))
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let err = http
        .get(format!("{}/v1.0/devices", server.base_url()))
        .bearer_auth(&tok)
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // The server drew the slow fault when the request arrived, which may be after the client
    // gave up on a loaded machine: wait for the record rather than reading it at once.
    server
        .wait_until(|r| r.faults().get(&FaultKind::Slow) == Some(&1))
        .await;
}

#[tokio::test]
async fn a_reset_closes_the_connection_and_applies_nothing() {
    let server = GraphServer::start(only(FaultKind::Reset)).await.unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let err = create(&http, server.base_url(), &tok, "dev-0001", Some("k"))
        .await
        .unwrap_err();
    assert!(!err.is_timeout() && !err.is_status(), "{err:?}");
    let rec = server.records();
    assert!(rec.creates.is_empty());
    assert_eq!(rec.requests.last().unwrap().status, None);
}

#[tokio::test]
async fn a_lost_response_applies_the_create_and_a_retry_meets_409() {
    let server = GraphServer::start(only(FaultKind::LostResponse).with_max_faults_per_operation(1))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let key = "intent-dev-0001-create-assignment";
    create(&http, server.base_url(), &tok, "dev-0001", Some(key))
        .await
        .unwrap_err();
    assert_eq!(
        server.records().creates.len(),
        1,
        "applied before the close"
    );
    let r = create(&http, server.base_url(), &tok, "dev-0001", Some(key))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let location = r.headers()["location"].to_str().unwrap();
    let rec = server.records();
    assert!(location.ends_with(&rec.creates[0].id));
    assert!(rec.duplicates().is_empty());
    assert_eq!(rec.requests.last().unwrap().attempt, 2);
}

#[tokio::test]
async fn the_same_seed_draws_the_same_faults() {
    async fn run(seed: u64) -> Vec<Option<FaultKind>> {
        let server = GraphServer::start(
            ServerConfig::new()
                .with_faults(0.5, seed)
                .with_fault_weight(FaultKind::Slow, 0)
                .with_fault_weight(FaultKind::Reset, 0)
                .with_fault_weight(FaultKind::LostResponse, 0),
        )
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let tok = token(&http, server.base_url(), "c1").await;
        for i in 0..40 {
            let _ = http
                .get(format!(
                    "{}/v1.0/devices?$top={}",
                    server.base_url(),
                    1 + i % 4
                ))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
        }
        server.records().requests.iter().map(|r| r.fault).collect()
    }
    let a = run(7).await;
    assert_eq!(a, run(7).await);
    assert_ne!(a, run(8).await);
    let faults = a.iter().filter(|f| f.is_some()).count();
    assert!((8..=32).contains(&faults), "about half of 40: {faults}");
}

#[tokio::test]
async fn an_outage_answers_503_until_it_closes() {
    let server = GraphServer::start(ServerConfig::new()).await.unwrap();
    let http = reqwest::Client::new();
    let tok = token(&http, server.base_url(), "c1").await;
    let url = format!("{}/v1.0/devices", server.base_url());
    server.set_outage(true);
    let r = http.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    server.set_outage(false);
    let r = http.get(&url).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(server.records().faults()[&FaultKind::Outage], 1);
}

#[tokio::test]
async fn a_429_throttles_every_operation_of_its_client_and_no_other_client() {
    // No grace: any request of the throttled client after the 429 is inside its window.
    let server = GraphServer::start(
        only(FaultKind::ThrottledSeconds)
            .with_max_faults_per_operation(1)
            .with_retry_after(Duration::from_secs(60))
            .with_throttle_grace(Duration::ZERO),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let base = server.base_url();
    let c1 = token(&http, base, "c1").await;
    let c2 = token(&http, base, "c2").await;
    let r = http
        .get(format!("{base}/v1.0/devices"))
        .bearer_auth(&c1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // Another operation of the same client: refused, and recorded as a violation.
    let r = create(&http, base, &c1, "dev-0001", Some("k1"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let left: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&left), "{left}");
    // Another client is not in c1's window: its request meets the server's fault draw.
    let r = create(&http, base, &c2, "dev-0002", Some("k2"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    let rec = server.records();
    let v = rec.throttle_violations();
    assert_eq!(v.len(), 1, "{v:#?}");
    assert_eq!(v[0].client_id, "c1");
    assert_eq!(v[0].note, Some("throttle_window"));
    assert_eq!(v[0].fault, None);
    assert!(v[0].path.starts_with("/v1.0/assignments"));
    let c2_create = rec.requests.iter().find(|r| r.client_id == "c2").unwrap();
    assert_eq!(c2_create.fault, Some(FaultKind::ThrottledSeconds));
    assert_eq!(c2_create.throttle_violation, None);
    assert!(rec.creates.is_empty());
}

#[tokio::test]
async fn devices_out_of_scope_are_refused_whatever_the_app() {
    let server = GraphServer::start(ServerConfig::new().with_out_of_scope_device("dev-0003"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = server.base_url();
    let tok = token(&http, base, "c1").await;
    for app in ["app-1", "app-2"] {
        let r = http
            .post(format!("{base}/v1.0/assignments"))
            .bearer_auth(&tok)
            .header("Idempotency-Key", app)
            .json(&json!({"intent_id": app, "device_id": "dev-0003", "app_id": app}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{app}");
    }
    let r = create(&http, base, &tok, "dev-0004", Some("k"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let rec = server.records();
    let refused = rec
        .requests
        .iter()
        .filter(|r| r.note == Some("out_of_scope"));
    assert_eq!(refused.count(), 2);
    assert_eq!(rec.creates.len(), 1);
}
