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
async fn naming_a_keyed_breaker_makes_each_of_its_keys_critical() {
    let registry = Registry::new();
    let tenants = registry.keyed_breakers("tenants");
    tenants.get("contoso");
    let url = serve(
        Health::new(registry.clone())
            .with_critical(["tenants"])
            .router("/health"),
    )
    .await;
    assert_eq!(get(&url).await.0, 200);
    open(&tenants.get("fabrikam"));
    let (status, body) = get(&url).await;
    assert_eq!(status, 503);
    assert_eq!(
        body["critical_open"],
        serde_json::json!(["tenants/fabrikam"])
    );
}
