//! The caller against the embedded provisioner over loopback gRPC, checked from the service's
//! own records; and the binary's exit status.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use grpc_provisioner::caller::{self, Caller, Op, Outcome, RpcError};
use grpc_provisioner::proto::GrantRequest;
use grpc_provisioner::service::{DOMAIN, GRACE, ServiceConfig, ServiceHandle, code_of};
use resilience_runtime::tonic::{code_name, rate_limited};
use resilience_runtime::{Classify, ErrorClass, TerminalReason};

const OPS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_faults_terminal_reasons_reported_never_retried_hints_honoured() {
    let server = ServiceHandle::start(ServiceConfig {
        fault_rate: 0.3,
        seed: 20_260_107,
        retry_hint: Duration::from_millis(250),
        seats: 2,
    })
    .await
    .unwrap();
    let caller = Arc::new(Caller::connect(&server.url(), "e2e").await.unwrap());
    let registry = caller::registry();
    let ops = caller::workload(OPS);
    let report = caller::run(caller, &registry, ops.clone(), 6).await;
    let rec = server.service().records();
    println!("{report}");

    // Nothing failed: every operation done, or refused for good with its reason.
    assert_eq!(report.exit_code, 0, "{}", report.result);
    assert_eq!(report.outcomes.len(), OPS);
    assert_eq!(report.by_outcome.get("failed"), None);

    // The service met transient faults and rate limits, and the caller retried them.
    let codes = rec.by_code();
    for code in [
        "UNAVAILABLE",
        "ABORTED",
        "DEADLINE_EXCEEDED",
        "RESOURCE_EXHAUSTED",
    ] {
        assert!(
            codes.get(code).copied().unwrap_or(0) > 0,
            "no {code}: {codes:?}"
        );
    }
    assert!(report.retries > 0);

    // Every terminal reason was met, reported with its reason and the seed's code, and never
    // retried: no request with its id reached the service after the terminal answer.
    let mut seen = BTreeSet::new();
    for (op, outcome) in ops.iter().zip(&report.outcomes) {
        let answered: Vec<_> = rec
            .requests
            .iter()
            .filter(|r| r.request_id == op.request_id())
            .collect();
        match outcome {
            Outcome::Terminal {
                request_id,
                reason,
                code,
                detail,
            } => {
                assert_eq!(request_id, op.request_id());
                let r: TerminalReason = reason.parse().unwrap();
                assert_eq!(code, code_name(code_of(r)), "{reason}");
                assert!(detail.starts_with('E'), "the upstream's code: {detail}");
                let last = answered.last().unwrap();
                assert_eq!(last.reason, Some(r), "the service's own record");
                assert_eq!(last.code, code.as_str());
                seen.insert(r);
            }
            Outcome::Granted { grant_id, .. } => {
                let Op::Grant(g) = op else { panic!() };
                assert!(
                    rec.grants.iter().any(|(u, res, id)| u == &g.user_id
                        && res == &g.resource_id
                        && id == grant_id),
                    "granted per the service: {g:?}"
                );
            }
            Outcome::Revoked { .. } => assert!(matches!(op, Op::Revoke(_))),
            Outcome::Failed { .. } => panic!("{outcome:?}"),
        }
    }
    assert_eq!(
        seen,
        TerminalReason::ALL.into_iter().collect::<BTreeSet<_>>()
    );
    let again = rec.retries_of_terminal();
    assert!(again.is_empty(), "terminal failures retried: {again:#?}");
    assert_eq!(
        report.terminal.values().map(|r| r.count).sum::<usize>(),
        rec.requests.iter().filter(|r| r.reason.is_some()).count(),
        "one terminal answer per terminal outcome"
    );

    // Rate-limit hints honoured for the whole client: no request of it inside a window.
    assert!(rec.rate_limits() > 0);
    let inside = rec.window_violations();
    assert!(inside.is_empty(), "inside a rate-limit window: {inside:#?}");
    assert!(report.hinted_waits > 0, "the hint set the wait");
    for (i, r) in rec.requests.iter().enumerate() {
        let Some(until) = r.retry_until else { continue };
        for later in &rec.requests[i + 1..] {
            if later.client_id == r.client_id && later.at >= r.at + GRACE {
                assert!(later.at >= until, "{later:#?} before {until:?}");
            }
        }
    }

    // No duplicate grant, though answers were lost after grants were applied; seats respected.
    assert!(rec.duplicates().is_empty(), "{:?}", rec.duplicates());
    let licensed = rec
        .grants
        .iter()
        .filter(|(_, res, _)| res == "app-licensed")
        .count();
    assert_eq!(licensed, 2, "two seats, both taken");
}

#[test]
fn the_caller_classifies_from_the_status_found_in_its_wrap_chain() {
    for reason in TerminalReason::ALL {
        let status = resilience_runtime::tonic::to_status_in(
            &resilience_runtime::TerminalError::new(reason, "E0000038: no"),
            DOMAIN,
        );
        let e = caller::ProvisionError::Rpc(RpcError {
            method: "Grant",
            user: "user-0003".into(),
            resource: "group-0001".into(),
            answer: caller::Answer(status),
        });
        assert_eq!(e.terminal_reason(), Some(reason));
        assert!(!e.class().is_retryable(), "{reason}");
        assert_eq!(e.code(), Some(code_name(code_of(reason))));
    }
    let limited = caller::ProvisionError::Rpc(RpcError {
        method: "Grant",
        user: "u".into(),
        resource: "r".into(),
        answer: caller::Answer(rate_limited("slow down", Duration::from_millis(700))),
    });
    assert_eq!(limited.class(), ErrorClass::Throttled);
    assert_eq!(limited.retry_after(), Some(Duration::from_millis(700)));
    let unavailable = caller::ProvisionError::Rpc(RpcError {
        method: "Grant",
        user: "u".into(),
        resource: "r".into(),
        answer: caller::Answer(tonic::Status::unavailable("down")),
    });
    assert_eq!(unavailable.class(), ErrorClass::Transient);
    assert_eq!(unavailable.terminal_reason(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_grant_is_answered_once_and_never_retried() {
    let server = ServiceHandle::start(ServiceConfig::default())
        .await
        .unwrap();
    let caller = Caller::connect(&server.url(), "one").await.unwrap();
    let registry = caller::registry();
    let suspended = GrantRequest {
        request_id: "r-1".into(),
        user_id: "user-0013".into(),
        resource_id: "group-0001".into(),
    };
    let e = registry.scope(caller.grant(&suspended)).await.unwrap_err();
    assert_eq!(
        e.terminal_reason(),
        Some(TerminalReason::UserNotProvisionable)
    );
    assert_eq!(e.code(), Some("FAILED_PRECONDITION"));
    let rec = server.service().records();
    assert_eq!(rec.requests.len(), 1);
    let m = registry.metrics();
    assert_eq!(m.site("grant").unwrap().metrics.retries, 0);
}

fn binary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grpc_provisioner"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn the_binary_reports_as_json_and_exits_by_its_outcomes() {
    let out = binary(&[
        "--requests",
        "20",
        "--fault-rate",
        "0.3",
        "--seed",
        "3",
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["operations"], 20);
    assert_eq!(v["server"]["retries_of_terminal"], 0);
    assert_eq!(v["server"]["window_violations"], 0);
    let terminal: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(v["terminal"].clone()).unwrap();
    assert_eq!(
        terminal["operation_not_permitted"]["code"],
        "PERMISSION_DENIED"
    );
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("result       ok (exit 0)"),
        "{stderr}"
    );

    // Every operation fails when every request meets a fault: exit 2, and the line says why.
    let out = binary(&["--requests", "3", "--fault-rate", "1"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("result       OPERATIONS FAILED (exit 2): 3 of 3 operations failed"),
        "{stdout}"
    );

    // Nothing listening: the run itself fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = binary(&["--addr", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUN FAILED (exit 1): cannot connect"));
}
