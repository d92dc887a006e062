//! The connector's guarantees one at a time, against the embedded server over loopback.

use std::sync::Arc;
use std::time::Duration;

use graph_connector::connector::{GraphClient, GraphError};
use graph_connector::server::{FaultKind, GraphServer, Records, ServerConfig, TokenExpiry};
use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::{Classify, ErrorClass, Registry, Rejected};

fn only(kind: FaultKind) -> ServerConfig {
    let mut c = ServerConfig::new()
        .with_faults(1.0, 3)
        .with_max_faults_per_operation(1);
    for k in FaultKind::RANDOM {
        c = c.with_fault_weight(k, u32::from(k == kind));
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_meeting_one_expired_token_refresh_it_once() {
    const CALLS: usize = 16;
    const USES: u64 = 20;
    let server = GraphServer::start(
        ServerConfig::new().with_token_expiry(TokenExpiry::after_requests(USES)),
    )
    .await
    .unwrap();
    let client = Arc::new(GraphClient::new(server.base_url(), "sf").unwrap());
    let registry = Registry::new();
    let url = format!("{}/v1.0/devices?$top=1", server.base_url());
    for _ in 0..USES {
        registry.scope(client.list_page(&url)).await.unwrap();
    }
    // The token is used up. The token endpoint holds its answers until every call has met the
    // expired token, so all of them race the one refresh whatever the scheduling.
    server.hold_tokens(true);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let (client, url) = (client.clone(), url.clone());
        calls.spawn(registry.scope(async move { client.list_page(&url).await.map(|_| ()) }));
    }
    let refused = |rec: &Records| {
        rec.requests
            .iter()
            .filter(|r| r.status == Some(401))
            .count()
    };
    server.wait_until(|rec| refused(rec) == CALLS).await;
    server.hold_tokens(false);
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }

    let rec = server.records();
    assert_eq!(
        refused(&rec),
        CALLS,
        "every call met the expired token once"
    );
    assert_eq!(rec.token_issues.len(), 2, "the first token and one refresh");
    assert!(rec.needless_token_issues().is_empty());
    assert_eq!(client.refreshes(), 1);
    let token_requests = rec
        .requests
        .iter()
        .filter(|r| r.path == "/oauth2/token")
        .count();
    assert_eq!(token_requests, 2, "one request per token issued");
    let listed = rec
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/v1.0/devices") && r.status == Some(200))
        .count();
    assert_eq!(
        listed,
        USES as usize + CALLS,
        "each call retried once, with the new token"
    );
}

#[tokio::test]
async fn a_lost_create_response_resolves_through_the_conflict_location() {
    let server = GraphServer::start(only(FaultKind::LostResponse))
        .await
        .unwrap();
    let client = GraphClient::new(server.base_url(), "lost").unwrap();
    let a = Registry::new()
        .scope(client.create_assignment("intent-1", "dev-0001", "app-1"))
        .await
        .unwrap();
    assert!(a.resolved_conflict);
    let rec = server.records();
    assert_eq!(rec.creates.len(), 1);
    assert_eq!(a.id, rec.creates[0].id);
    let posts: Vec<_> = rec
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/v1.0/assignments")
        .collect();
    assert!(posts.len() >= 2);
    assert!(
        posts
            .iter()
            .all(|r| r.idempotency_key.as_deref() == Some("intent-1-create-assignment"))
    );
    assert_eq!(posts[0].status, None, "the first answer was lost");
    assert!(
        posts[1..]
            .iter()
            .all(|r| r.status.is_none() || r.status == Some(409))
    );
}

#[tokio::test]
async fn both_retry_after_forms_are_waited_for() {
    for kind in [FaultKind::ThrottledSeconds, FaultKind::ThrottledDate] {
        let server = GraphServer::start(only(kind)).await.unwrap();
        let client = GraphClient::new(server.base_url(), "ra").unwrap();
        let url = format!("{}/v1.0/devices", server.base_url());
        Registry::new().scope(client.list_page(&url)).await.unwrap();
        let rec = server.records();
        assert_eq!(rec.retry_afters_given(), 1, "{kind}");
        assert!(
            rec.early_requests().is_empty(),
            "{kind}: {:#?}",
            rec.early_requests()
        );
        let page_requests = rec
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/v1.0/devices"))
            .count();
        assert_eq!(page_requests, 2, "{kind}");
    }
}

#[tokio::test]
async fn policy_refusals_are_policy_violations_and_not_retried() {
    let server = GraphServer::start(ServerConfig::new().with_policy_app("app-x"))
        .await
        .unwrap();
    let client = GraphClient::new(server.base_url(), "policy").unwrap();
    let err = Registry::new()
        .scope(client.create_assignment("intent-9", "dev-0009", "app-x"))
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::Forbidden(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::PolicyViolation);
    let posts = server
        .records()
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/v1.0"))
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn an_open_breaker_stops_calls_until_its_cooldown_has_passed() {
    let server = GraphServer::start(ServerConfig::new()).await.unwrap();
    let client = GraphClient::new(server.base_url(), "breaker").unwrap();
    let registry = Registry::new();
    // Far longer than the backoff before the fourth attempt (400 ms), so that attempt meets the
    // open breaker rather than a half-open one however slowly the machine runs; the test skips
    // the cooldown on a paused clock below.
    let cooldown = Duration::from_secs(60);
    registry
        .configure_breaker(
            "graph",
            BreakerConfig::new()
                .with_failure_threshold(3)
                .with_cooldown(cooldown),
        )
        .unwrap();
    let url = format!("{}/v1.0/devices", server.base_url());
    let to_server = || {
        server
            .records()
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/v1.0/devices"))
            .count()
    };

    server.set_outage(true);
    let err = registry.scope(client.list_page(&url)).await.unwrap_err();
    assert!(
        matches!(err, GraphError::Rejected(Rejected::CircuitOpen { .. })),
        "three 503s open the breaker during the retries: {err:?}, {} requests, {:?}",
        to_server(),
        registry.breaker("graph").state()
    );
    assert_eq!(to_server(), 3);
    assert_eq!(registry.breaker("graph").state(), BreakerState::Open);
    let err = registry.scope(client.list_page(&url)).await.unwrap_err();
    let GraphError::Rejected(Rejected::CircuitOpen { retry_in, .. }) = err else {
        panic!("{err:?}");
    };
    assert_eq!(to_server(), 3, "no request while the breaker is open");

    server.set_outage(false);
    // The breaker reads tokio's clock: the cooldown passes by advancing it, paused only for that
    // moment (no request is in flight), then running again for the real sockets.
    tokio::time::pause();
    tokio::time::advance(retry_in).await;
    tokio::time::resume();
    registry.scope(client.list_page(&url)).await.unwrap();
    assert_eq!(to_server(), 4, "one probe, which closes the breaker");
    assert_eq!(registry.breaker("graph").state(), BreakerState::Closed);
}
