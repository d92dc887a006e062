//! The connector's guarantees one at a time, against the embedded server over loopback.

use std::sync::Arc;
use std::time::Duration;

use graph_connector::connector::{GraphClient, GraphError};
use graph_connector::report::DeviceOutcome;
use graph_connector::server::{FaultKind, GraphServer, Records, ServerConfig, TokenExpiry};
use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::budget::BudgetConfig;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_holds_back_every_call_of_the_client_until_its_hint_has_passed() {
    // Every operation's first request is throttled for 1 s; then it passes.
    let server = GraphServer::start(
        only(FaultKind::ThrottledSeconds).with_retry_after(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let client = Arc::new(GraphClient::new(server.base_url(), "app-1").unwrap());
    let registry = graph_connector::connector::registry();
    let url = format!("{}/v1.0/devices", server.base_url());
    let first = tokio::spawn(registry.scope({
        let (client, url) = (client.clone(), url.clone());
        async move { client.list_page(&url).await.map(|_| ()) }
    }));
    server
        .wait_until(|rec| rec.requests.iter().any(|r| r.status == Some(429)))
        .await;
    // The 429 is on its way to the client: calls of other operations started now must not
    // reach the server before the window closes.
    let mut others = tokio::task::JoinSet::new();
    for n in 0..4 {
        let client = client.clone();
        others.spawn(registry.scope(async move {
            let device = format!("dev-{n:04}");
            client
                .create_assignment(&format!("intent-{n}"), &device, "app-1")
                .await
                .map(|_| ())
        }));
    }
    first.await.unwrap().unwrap();
    while let Some(r) = others.join_next().await {
        r.unwrap().unwrap();
    }

    let rec = server.records();
    let (_, window_end) = rec.requests[..]
        .iter()
        .find_map(|r| r.retry_after.clone())
        .unwrap();
    // Requests already on their way when the 429 left the server cannot be recalled: a create
    // may arrive within the grace after it, and none later inside the window.
    let sent_429 = rec
        .requests
        .iter()
        .find(|r| r.status == Some(429))
        .map(|r| r.at)
        .unwrap();
    let inside = rec.throttle_violations();
    assert!(inside.is_empty(), "{inside:#?}");
    assert!(rec.early_requests().is_empty());
    for r in rec
        .requests
        .iter()
        .filter(|r| r.path == "/v1.0/assignments")
    {
        let grace = graph_connector::server::THROTTLE_GRACE;
        assert!(
            r.at <= sent_429 + grace || r.at >= window_end - grace,
            "a create arrived inside the first window: {r:#?}"
        );
    }
    assert_eq!(rec.creates.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_create_404_is_retried_from_a_budget_of_its_own() {
    let server =
        GraphServer::start(ServerConfig::new().with_consistency_delay(Duration::from_millis(600)))
            .await
            .unwrap();
    let client = GraphClient::new(server.base_url(), "lag").unwrap();
    let registry = graph_connector::connector::registry();
    // The service's budget has no retry to give: the lag must not need it.
    registry
        .configure_budget(
            "graph",
            BudgetConfig::new().with_capacity(1).with_retry_cost(1),
        )
        .unwrap();
    let (created, read) = registry
        .scope(async {
            let a = client
                .create_assignment("intent-1", "dev-0001", "app-1")
                .await
                .unwrap();
            let r = client
                .read_after_create(&a.id, a.created.unwrap())
                .await
                .unwrap();
            (a, r)
        })
        .await;
    assert_eq!(created.id, read.id);
    let rec = server.records();
    let lagged = rec
        .requests
        .iter()
        .filter(|r| r.note == Some("not_yet_visible"))
        .count();
    assert!(
        lagged >= 2,
        "the read met the lag and was retried: {lagged}"
    );
    let m = registry.metrics();
    let site = &m.site("read_after_create").unwrap().metrics;
    assert_eq!((site.ok, site.retries as usize), (1, lagged));
    assert_eq!(site.errors.permanent, 0);
    assert_eq!(registry.budget("graph").exhausted_total(), 0);
    assert_eq!(
        registry.breaker("graph").failures(),
        0,
        "a 404 of lag is no sign of ill health"
    );

    // Past the consistency window a 404 is what it says: permanent, not retried.
    let late = GraphClient::new(server.base_url(), "lag")
        .unwrap()
        .with_consistency_window(Duration::ZERO);
    let before = server.records().requests.len();
    let err = registry
        .scope(late.read_after_create("asg-999999", std::time::Instant::now()))
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::NotFound(_)), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    let reads = server.records().requests.len() - before;
    assert_eq!(reads, 2, "a token and one read");
}

/// One device whose create's answers are all lost for `lost` requests in a row.
async fn run_with_lost_creates(lost: u32) -> (graph_connector::report::Report, Records) {
    let mut config = only(FaultKind::LostResponse)
        .with_max_faults_per_operation(lost)
        .with_faults_on_method("POST")
        .with_devices(1)
        .with_consistency_delay(Duration::ZERO);
    config.fault_rate = 1.0;
    let server = GraphServer::start(config).await.unwrap();
    let client = Arc::new(GraphClient::new(server.base_url(), "lost").unwrap());
    let report = graph_connector::connector::run(
        client,
        &graph_connector::connector::registry(),
        &graph_connector::connector::RunOptions::default(),
    )
    .await;
    (report, server.records())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answers_were_all_lost_is_resolved_by_a_replay_at_the_end() {
    // The call's six attempts are all lost: its outcome is unknown, though the first applied.
    // The end-of-run replay carries the same key, meets 409 and finds the assignment.
    let (report, rec) = run_with_lost_creates(6).await;
    assert_eq!(report.retried_at_end, 1);
    assert_eq!(rec.creates.len(), 1, "created once");
    assert!(rec.duplicates().is_empty());
    let [
        DeviceOutcome::Assigned {
            assignment_id,
            resolved_conflict,
            ..
        },
    ] = &report.device_outcomes[..]
    else {
        panic!("{:?}", report.device_outcomes);
    };
    assert_eq!(assignment_id, &rec.creates[0].id);
    assert!(resolved_conflict);
    assert_eq!(report.exit_code(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_still_lost_after_the_replay_is_reported_unknown_not_failed() {
    let (report, rec) = run_with_lost_creates(12).await;
    assert_eq!(rec.creates.len(), 1, "the server holds it");
    let [
        DeviceOutcome::Unknown {
            idempotency_key, ..
        },
    ] = &report.device_outcomes[..]
    else {
        panic!("{:?}", report.device_outcomes);
    };
    assert_eq!(
        rec.creates[0].idempotency_key.as_deref(),
        Some(idempotency_key.as_str())
    );
    assert_eq!(report.exit_code(), 2);
    assert_eq!(report.result.status, "devices_failed");
}

const OUTAGE_DEVICES: usize = 12;

/// A run of 12 devices, 4 at a time, with `patience` for an open breaker, through an outage:
/// once the devices are listed the service goes down until the run's breaker has opened (ten
/// failures in a row; cooldown 1 s), then comes back.
async fn through_an_outage(patience: Duration) -> (graph_connector::report::Report, Records) {
    let server = Arc::new(
        GraphServer::start(
            ServerConfig::new()
                .with_devices(OUTAGE_DEVICES)
                .with_consistency_delay(Duration::ZERO),
        )
        .await
        .unwrap(),
    );
    let client = Arc::new(GraphClient::new(server.base_url(), "outage").unwrap());
    let registry = graph_connector::connector::registry();
    let mut run = tokio::spawn({
        let registry = registry.clone();
        async move {
            graph_connector::connector::run(
                client,
                &registry,
                &graph_connector::connector::RunOptions {
                    concurrency: 4,
                    breaker_patience: patience,
                    ..Default::default()
                },
            )
            .await
        }
    });
    server
        .wait_until(|rec| {
            rec.requests
                .iter()
                .any(|r| r.path.starts_with("/v1.0/devices") && r.status == Some(200))
        })
        .await;
    server.set_outage(true);
    // The breaker opens on the client's tenth failure, after the server recorded it: look again
    // at every request the server records (with patience, the probe after the cooldown is one),
    // or stop looking when the run ends (without patience, the run may end with it open).
    let breaker = registry.breaker("graph");
    let opened = server.wait_until(|_| breaker.opened_total() >= 1);
    let report = tokio::select! {
        () = opened => {
            server.set_outage(false);
            run.await.unwrap()
        }
        report = &mut run => report.unwrap(),
    };
    assert!(
        breaker.opened_total() >= 1,
        "{:?}",
        report.breaker_transitions
    );
    (report, server.records())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_that_opens_the_breaker_pauses_the_batch_instead_of_failing_it() {
    let (report, rec) = through_an_outage(Duration::from_secs(60)).await;
    assert!(
        report.breaker_pauses.pauses >= 1,
        "{:?}",
        report.breaker_pauses
    );
    assert_eq!(
        report.failures().count(),
        0,
        "{:#?}",
        report.device_outcomes
    );
    assert_eq!(
        report.devices_by_outcome.get("assigned"),
        Some(&OUTAGE_DEVICES),
        "every device assigned after the outage"
    );
    assert_eq!(report.exit_code(), 0);
    assert_eq!(rec.creates.len(), OUTAGE_DEVICES);
    assert!(rec.duplicates().is_empty());
}

/// The control: the same outage without patience. The batch does not wait for the breaker, so
/// the devices it refuses fail (the end-of-run replay comes within the cooldown and is refused
/// too), which is what the pause above prevents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_patience_an_open_breaker_fails_the_queue() {
    let (report, rec) = through_an_outage(Duration::ZERO).await;
    assert_eq!(report.breaker_pauses.pauses, 0);
    let refused = report
        .device_outcomes
        .iter()
        .filter(|d| format!("{d:?}").contains("circuit"))
        .count();
    assert!(refused >= 1, "{:#?}", report.device_outcomes);
    assert!(report.failures().count() >= refused);
    assert_ne!(report.exit_code(), 0);
    assert!(rec.duplicates().is_empty());
}
