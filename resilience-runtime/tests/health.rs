//! The health endpoint on a real axum server on 127.0.0.1:0 (feature `axum`).
#![cfg(feature = "axum")]

use resilience_runtime::Registry;
use resilience_runtime::axum::Health;
use resilience_runtime::breaker::{Breaker, Outcome};
use serde_json::Value;

fn open(b: &Breaker) {
    while b.state() != resilience_runtime::breaker::BreakerState::Open {
        b.try_acquire().unwrap().record(Outcome::Failure);
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/health")
}

async fn get(url: &str) -> (u16, Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn serves_health_json_and_503_only_when_a_critical_breaker_is_open() {
    let registry = Registry::new();
    let graph = registry.breaker("graph");
    let okta = registry.breaker("okta");
    let url = serve(
        Health::new(registry.clone())
            .with_critical(["graph"])
            .router("/health"),
    )
    .await;

    let (status, body) = get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body["healthy"], true);
    assert_eq!(body["critical_open"], serde_json::json!([]));
    assert_eq!(body["breakers"][0]["name"], "graph");
    assert_eq!(body["breakers"][0]["state"], "closed");
    assert_eq!(body["breakers"][0]["gauge"], 0);

    // A non-critical breaker open: reported, still 200.
    open(&okta);
    let (status, body) = get(&url).await;
    assert_eq!(status, 200);
    assert_eq!(body["healthy"], false);
    assert_eq!(body["breakers"][1]["name"], "okta");
    assert_eq!(body["breakers"][1]["state"], "open");

    // The critical one open: 503, and named.
    open(&graph);
    let (status, body) = get(&url).await;
    assert_eq!(status, 503);
    assert_eq!(body["critical_open"], serde_json::json!(["graph"]));
    assert_eq!(body["breakers"][0]["gauge"], 1);
}

#[tokio::test]
async fn a_critical_keyed_base_fails_when_most_keys_are_open_not_one() {
    let registry = Registry::new();
    let tenants = registry.keyed_breakers("tenants");
    for t in ["contoso", "fabrikam", "northwind", "adatum"] {
        tenants.get(t);
    }
    let url = serve(
        Health::new(registry.clone())
            .with_critical(["tenants", "billing/acme"])
            .router("/health"),
    )
    .await;
    assert_eq!(get(&url).await.0, 200);

    // One tenant of four open: that tenant's outage, not the service's.
    open(&tenants.get("fabrikam"));
    let (status, body) = get(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["healthy"], true);
    let base = &body["keyed"][0];
    assert_eq!(base["name"], "tenants");
    assert_eq!(
        (base["keys"].as_u64(), base["open"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(
        base["worst"][0]["name"], "tenants/fabrikam",
        "the open key first"
    );

    // Three of four: over half, so the base is down.
    open(&tenants.get("contoso"));
    open(&tenants.get("adatum"));
    let (status, body) = get(&url).await;
    assert_eq!(status, 503);
    assert_eq!(body["critical_open"], serde_json::json!(["tenants"]));
    assert_eq!(body["healthy"], false);

    // One key named critical in full: that key alone decides.
    let billing = registry.keyed_breakers("billing");
    billing.get("other");
    open(&billing.get("acme"));
    let (_, body) = get(&url).await;
    assert_eq!(
        body["critical_open"],
        serde_json::json!(["tenants", "billing/acme"])
    );
}

#[test]
fn the_report_of_ten_thousand_keys_stays_small() {
    let registry = Registry::new();
    let tenants = registry.keyed_breakers("tenants");
    for i in 0..10_000 {
        let b = tenants.get(&format!("tenant-{i:05}"));
        if i % 1000 == 7 {
            open(&b);
        }
    }
    let report = registry.health();
    let base = &report.keyed[0];
    assert_eq!((base.keys, base.open, base.closed), (10_000, 10, 9_990));
    assert_eq!(base.worst.len(), 10);
    assert!(
        base.worst
            .iter()
            .all(|b| b.state == resilience_runtime::breaker::BreakerState::Open)
    );
    assert!(report.healthy, "10 of 10,000 open");
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.len() < 4_096, "{} bytes", json.len());
}
