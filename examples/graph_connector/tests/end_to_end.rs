//! The example end to end over loopback: the connector against the embedded server at a 30%
//! fault rate, with a 1 s read-after-create lag and 3 s tokens, checked from the server's own
//! records; and the binary's exit status and last line, against servers this test starts.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use graph_connector::connector::{
    self, BLOCKED_APP, GraphClient, RunOptions, app_for, idempotency_key_for, intent_for,
};
use graph_connector::report::DeviceOutcome;
use graph_connector::server::{FaultKind, GraphServer, ServerConfig, TokenExpiry, device};
use serde_json::Value;

const DEVICES: usize = 36;

/// One device in twelve is out of scope of the tenant's policy, whatever the app.
fn out_of_scope(i: usize) -> bool {
    i % 12 == 5
}

fn in_scope(i: usize) -> bool {
    !out_of_scope(i) && app_for(i) != BLOCKED_APP
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_lag_and_short_tokens_every_in_scope_device_assigned() {
    let mut config = ServerConfig::new()
        .with_devices(DEVICES)
        .with_max_page_size(25)
        .with_faults(0.3, 20_260_106)
        .with_fault_weight(FaultKind::LostResponse, 2)
        .with_policy_app(BLOCKED_APP)
        .with_token_expiry(TokenExpiry::after(Duration::from_secs(3)))
        .with_retry_after(Duration::from_secs(1))
        .with_slow_response(Duration::from_millis(2200))
        .with_consistency_delay(Duration::from_secs(1));
    for i in (0..DEVICES).filter(|i| out_of_scope(*i)) {
        config = config.with_out_of_scope_device(device(i).id);
    }
    let server = GraphServer::start(config).await.unwrap();
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

    // The run completed, every listed device has an outcome, and the verdict is ok.
    assert!(report.run_error.is_none(), "{:?}", report.run_error);
    assert_eq!((report.listed, report.devices), (DEVICES, DEVICES));
    assert_eq!(report.limit, None);
    assert_eq!(report.device_outcomes.len(), DEVICES);
    assert_eq!(report.exit_code(), 0, "{:?}", report.result);

    // 100% of in-scope devices assigned, each backed by the server's create with the intent's
    // key; every other device refused by policy; nothing failed, nothing unknown.
    let creates: BTreeMap<&str, _> = rec
        .creates
        .iter()
        .map(|c| (c.device_id.as_str(), c))
        .collect();
    for (i, outcome) in report.device_outcomes.iter().enumerate() {
        let d = device(i);
        assert_eq!(outcome.device_id(), d.id);
        if in_scope(i) {
            let DeviceOutcome::Assigned { assignment_id, .. } = outcome else {
                panic!("in scope, not assigned: {outcome:?}");
            };
            let c = creates.get(d.id.as_str()).expect("the server created it");
            assert_eq!(&c.id, assignment_id);
            assert_eq!(c.app_id, app_for(i));
            let key = idempotency_key_for(&intent_for(&d.id, app_for(i)));
            assert_eq!(c.idempotency_key.as_deref(), Some(key.as_str()));
        } else {
            assert!(
                matches!(outcome, DeviceOutcome::PolicyViolation { stage, .. } if stage == "create"),
                "out of scope: {outcome:?}"
            );
            assert!(!creates.contains_key(d.id.as_str()));
        }
    }
    let in_scope_count = (0..DEVICES).filter(|i| in_scope(*i)).count();
    assert_eq!(
        report.devices_by_outcome.get("assigned"),
        Some(&in_scope_count)
    );
    assert_eq!(
        report.devices_by_outcome.get("policy_violation"),
        Some(&(DEVICES - in_scope_count))
    );
    assert_eq!(
        report.failures().count(),
        0,
        "{:#?}",
        report.failures().collect::<Vec<_>>()
    );
    assert!(!report.failures_by_class.contains_key("auth"));
    // The counts match the server's records.
    assert_eq!(rec.creates.len(), in_scope_count);

    // Zero duplicates, though creates were retried after lost responses.
    assert!(rec.duplicates().is_empty(), "{:?}", rec.duplicates());
    let lost_creates = rec
        .requests
        .iter()
        .filter(|r| r.fault == Some(FaultKind::LostResponse) && r.method == "POST")
        .count();
    assert!(lost_creates > 0, "the seed loses some create responses");

    // Throttling honoured for the whole client: no request of it inside a throttle window, none
    // before a Retry-After, though the server asked for waits.
    assert!(rec.retry_afters_given() > 0);
    let inside = rec.throttle_violations();
    assert!(inside.is_empty(), "inside a throttle window: {inside:#?}");
    let early = rec.early_requests();
    assert!(early.is_empty(), "before Retry-After passed: {early:#?}");
    assert!(
        report.waits.retry_after > 0,
        "Retry-After waits are counted"
    );

    // Tokens lasted 3 s in a run of several: refreshed ahead of expiry, so no request was sent
    // with an expired token, and no refresh was needless.
    assert!(report.duration_seconds > 3.0, "{}", report.duration_seconds);
    assert!(rec.refreshes() >= 1, "tokens were replaced during the run");
    let ahead = rec
        .token_issues
        .iter()
        .filter(|t| t.previous.is_some() && !t.previous_expired)
        .count();
    assert!(
        ahead >= 1,
        "replaced ahead of expiry: {:#?}",
        rec.token_issues
    );
    assert!(
        rec.expired_tokens.is_empty(),
        "sent with an expired token: {:?}",
        rec.expired_tokens
    );
    let needless = rec.needless_token_issues();
    assert!(
        needless.is_empty(),
        "refreshed a fresh token: {needless:#?}"
    );
    assert_eq!(report.token_refreshes as usize, rec.refreshes());

    // Reads met the 1 s lag and waited it out on their own site.
    let lagged = rec
        .requests
        .iter()
        .filter(|r| r.note == Some("not_yet_visible"))
        .count();
    assert!(lagged > 0, "reads met the replication lag");
    let read = report
        .operations
        .iter()
        .find(|o| o.operation == "read_after_create")
        .expect("read_after_create ran");
    assert_eq!(read.ok as usize, in_scope_count);
    assert!(read.retries > 0);
    let view = connector::server_view(&rec);
    assert_eq!((view.duplicates, view.throttle_violations), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// The binary.

fn binary(args: &[&str]) -> std::process::Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_graph_connector"));
    c.args(args);
    c
}

/// Runs the binary on a thread of its own while this test's runtime serves.
async fn run_binary(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        binary(&args).output().expect("the binary runs")
    })
    .await
    .unwrap()
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_2_when_devices_fail_and_says_why() {
    let server = GraphServer::start(ServerConfig::new().with_devices(4))
        .await
        .unwrap();
    let args = [
        "--base-url",
        server.base_url(),
        "--concurrency",
        "2",
        "--breaker-wait",
        "1",
        "--json",
    ]
    .map(str::to_owned)
    .to_vec();
    let run = tokio::spawn(run_binary(args));
    // Once the devices are listed, the service goes down for good.
    server
        .wait_until(|rec| {
            rec.requests
                .iter()
                .any(|r| r.path.starts_with("/v1.0/devices") && r.status == Some(200))
        })
        .await;
    server.set_outage(true);
    let out = run.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = last_line(&out.stderr);
    assert!(
        last.starts_with("result       DEVICES FAILED (exit 2): "),
        "{last}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"]["exit_code"], 2);
    assert_eq!(v["result"]["status"], "devices_failed");
    let outcomes = v["device_outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 4, "every listed device is reported");
    let rec = server.records();
    let assigned = outcomes
        .iter()
        .filter(|o| o["outcome"] == "assigned")
        .count();
    assert_eq!(assigned, rec.creates.len(), "as many assigned as created");
    for o in outcomes.iter().filter(|o| o["outcome"] != "assigned") {
        assert_eq!(o["outcome"], "failed", "503s apply nothing: {o}");
        assert_eq!(o["class"], "transient", "{o}");
    }
    assert!(assigned < 4);
    assert!(v["retried_at_end"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_1_when_the_listing_fails() {
    let server = GraphServer::start(ServerConfig::new()).await.unwrap();
    server.set_outage(true);
    let out = run_binary(
        ["--base-url", server.base_url()]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let last = last_line(&out.stdout);
    assert!(
        last.starts_with("result       RUN FAILED (exit 1): listing devices failed"),
        "{last}"
    );
}

#[tokio::test]
async fn devices_with_a_base_url_is_a_configuration_error() {
    let out = run_binary(
        ["--base-url", "http://127.0.0.1:9", "--devices", "5"]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let last = last_line(&out.stderr);
    assert!(
        last.starts_with("result       RUN FAILED (exit 1): --devices sizes the embedded server"),
        "{last}"
    );
    let out = run_binary(["--fault-rate", "2"].map(str::to_owned).to_vec()).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn limit_caps_the_run_and_the_report_says_so() {
    let out = run_binary(
        [
            "--devices",
            "14",
            "--limit",
            "6",
            "--fault-rate",
            "0",
            "--consistency-lag",
            "0",
            "--json",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["listed"].as_u64(), v["limit"].as_u64()),
        (Some(14), Some(6))
    );
    assert_eq!(v["devices"], 6);
    assert_eq!(v["device_outcomes"].as_array().unwrap().len(), 6);
    // dev-0006 is out of scope of the embedded server's policy.
    assert_eq!(v["device_outcomes"][5]["device_id"], "dev-0006");
    assert_eq!(v["device_outcomes"][5]["outcome"], "policy_violation");
    assert_eq!(v["server"]["creates"], 5);
    assert!(last_line(&out.stderr).starts_with("result       ok (exit 0)"));
    // The table has a line for it.
    let out = run_binary(
        [
            "--devices",
            "3",
            "--limit",
            "2",
            "--fault-rate",
            "0",
            "--consistency-lag",
            "0",
        ]
        .map(str::to_owned)
        .to_vec(),
    )
    .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("limit        2: 2 of the 3 devices listed handled"),
        "{table}"
    );
    assert!(last_line(&out.stdout).starts_with("result       ok (exit 0)"));
}
