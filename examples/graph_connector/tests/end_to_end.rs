//! The example's connector against the embedded server at a 30% fault rate with a fixed seed,
//! checked from the server's own records. Real loopback HTTP; the run takes a few seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use graph_connector::connector::{self, BLOCKED_APP, GraphClient, RunOptions, app_for, intent_for};
use graph_connector::report::DeviceOutcome;
use graph_connector::server::{FaultKind, GraphServer, ServerConfig, TokenExpiry, device};

const DEVICES: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_no_duplicate_no_early_request_one_refresh_per_expiry() {
    let server = GraphServer::start(
        ServerConfig::new()
            .with_devices(DEVICES)
            .with_max_page_size(25)
            .with_faults(0.3, 20_260_106)
            .with_fault_weight(FaultKind::LostResponse, 2)
            .with_policy_app(BLOCKED_APP)
            .with_token_expiry(TokenExpiry::after_requests(40))
            .with_retry_after(Duration::from_secs(1))
            .with_slow_response(Duration::from_millis(2200))
            .with_consistency_delay(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let client = Arc::new(GraphClient::new(server.base_url(), "e2e").unwrap());
    let registry = connector::registry();
    let report = connector::run(
        client,
        &registry,
        &RunOptions {
            concurrency: 8,
            ..RunOptions::default()
        },
    )
    .await;
    let rec = server.records();
    println!("{report}");

    // The run completed: every device is assigned or reported with its class.
    assert!(report.run_error.is_none(), "{:?}", report.run_error);
    assert!(report.completed);
    assert_eq!(report.device_outcomes.len(), DEVICES);
    let creates: BTreeMap<&str, _> = rec
        .creates
        .iter()
        .map(|c| (c.device_id.as_str(), c))
        .collect();
    for (i, outcome) in report.device_outcomes.iter().enumerate() {
        let d = device(i);
        assert_eq!(outcome.device_id(), d.id);
        match outcome {
            DeviceOutcome::Assigned { assignment_id, .. } => {
                let c = creates.get(d.id.as_str()).expect("the server created it");
                assert_eq!(&c.id, assignment_id);
                assert_eq!(c.app_id, app_for(i));
                let key = format!("{}-create-assignment", intent_for(&d.id, app_for(i)));
                assert_eq!(c.idempotency_key.as_deref(), Some(key.as_str()));
            }
            DeviceOutcome::Failed { class, stage, .. } => {
                assert!(
                    [
                        "transient",
                        "throttled",
                        "permanent",
                        "policy_violation",
                        "auth"
                    ]
                    .contains(&class.as_str()),
                    "{outcome:?}"
                );
                if app_for(i) == BLOCKED_APP {
                    assert_eq!(
                        (stage.as_str(), class.as_str()),
                        ("create", "policy_violation")
                    );
                }
            }
        }
        if app_for(i) == BLOCKED_APP {
            assert!(
                matches!(outcome, DeviceOutcome::Failed { class, .. } if class == "policy_violation"),
                "the policy's 403 is a policy violation: {outcome:?}"
            );
        }
    }
    let assigned = report
        .devices_by_outcome
        .get("assigned")
        .copied()
        .unwrap_or(0);
    assert!(
        assigned >= DEVICES * 85 / 100,
        "nearly every allowed device is assigned at 30% faults: {:?}",
        report.devices_by_outcome
    );

    // Zero duplicates, though creates were retried after lost responses.
    assert!(rec.duplicates().is_empty(), "{:?}", rec.duplicates());
    let lost_creates = rec
        .requests
        .iter()
        .filter(|r| r.fault == Some(FaultKind::LostResponse) && r.method == "POST")
        .count();
    let conflicts = rec
        .requests
        .iter()
        .filter(|r| r.status == Some(409))
        .count();
    assert!(lost_creates > 0, "the seed loses some create responses");
    assert!(conflicts > 0, "a retried create met 409");
    let resolved = report.resolved_conflicts();
    assert!(resolved > 0, "a 409 resolved through Location");

    // Zero requests before a Retry-After had passed, though the server asked for waits.
    assert!(rec.retry_afters_given() > 0);
    let early = rec.early_requests();
    assert!(
        early.is_empty(),
        "sent before Retry-After passed: {early:#?}"
    );

    // One token refresh per expiry: each refresh replaced an expired token.
    assert!(
        !rec.expired_tokens.is_empty(),
        "tokens expired during the run"
    );
    let needless = rec.needless_token_issues();
    assert!(needless.is_empty(), "refreshed a good token: {needless:#?}");
    assert!(rec.refreshes() <= rec.expired_tokens.len());
    assert_eq!(report.token_refreshes as usize, rec.refreshes());

    // What the client reports agrees with the server.
    assert!(report.retries > 0);
    assert!(
        report.waits.retry_after > 0,
        "Retry-After waits are counted"
    );
    let view = connector::server_view(&rec);
    assert_eq!(view.duplicates, 0);
    assert_eq!(view.early_requests, 0);
}
