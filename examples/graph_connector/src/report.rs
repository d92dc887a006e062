//! The run's summary: a table for people, one JSON object for machines.
//!
//! The report holds plain data (names of classes, counts, seconds), so it can be filled by the
//! connector from the runtime's metrics and events, and by the server's records when the server is
//! the embedded one.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

/// One operation's calls, by outcome and class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRow {
    /// The operation (the annotated fn's name).
    pub operation: String,
    /// Logical calls that ended.
    pub calls: u64,
    /// Calls that returned `Ok`.
    pub ok: u64,
    /// Calls that ended in an error, by class (`transient`, `throttled`, `permanent`,
    /// `policy_violation`, `auth`).
    pub errors: BTreeMap<String, u64>,
    /// Calls the runtime ended itself (open circuit, timeout, budget).
    pub rejected: u64,
    /// Retries made.
    pub retries: u64,
    /// Calls that succeeded after at least one retry.
    pub retry_successes: u64,
    /// Credential refreshes the engine asked for.
    pub refreshes: u64,
}

/// The waits the engine made between attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Waits {
    /// Waits made (one per retry).
    pub total: u64,
    /// Waits set by a server's `Retry-After` (the backoff would have been shorter).
    pub retry_after: u64,
    /// Seconds waited in all.
    pub seconds: f64,
    /// Seconds waited because of `Retry-After`.
    pub retry_after_seconds: f64,
}

/// A breaker changing state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Seconds since the run started.
    pub at_seconds: f64,
    /// The breaker.
    pub breaker: String,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
}

/// What happened to one device: `outcome` in the JSON is `assigned`, `policy_violation`,
/// `failed` (with its class) or `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DeviceOutcome {
    /// The assignment exists and was read back.
    Assigned {
        /// The device.
        device_id: String,
        /// The assignment.
        assignment_id: String,
        /// Whether a retried create met `409` and was resolved through `Location`.
        resolved_conflict: bool,
    },
    /// The tenant's policy refuses the assignment (`403`): not retried; nothing to do but ask
    /// an administrator.
    PolicyViolation {
        /// The device.
        device_id: String,
        /// `create` or `read`.
        stage: String,
        /// The error's code.
        code: Option<String>,
        /// The server's message.
        message: String,
    },
    /// The device was not assigned; the error's class says why.
    Failed {
        /// The device.
        device_id: String,
        /// `create` or `read`.
        stage: String,
        /// The error's class.
        class: String,
        /// The error's code, if it has one.
        code: Option<String>,
        /// The error's message.
        message: String,
    },
    /// A create whose result the client cannot know: an attempt may have been applied, but its
    /// answer was lost or cut short, and the replay with the same key at the end of the run did
    /// not settle it either. The server may hold the assignment.
    Unknown {
        /// The device.
        device_id: String,
        /// The key a later replay must carry to never duplicate it.
        idempotency_key: String,
        /// The last error.
        message: String,
    },
}

impl DeviceOutcome {
    /// The device.
    pub fn device_id(&self) -> &str {
        match self {
            DeviceOutcome::Assigned { device_id, .. }
            | DeviceOutcome::PolicyViolation { device_id, .. }
            | DeviceOutcome::Failed { device_id, .. }
            | DeviceOutcome::Unknown { device_id, .. } => device_id,
        }
    }

    /// The outcome's name, as the JSON's `outcome` says it.
    pub fn outcome(&self) -> &'static str {
        match self {
            DeviceOutcome::Assigned { .. } => "assigned",
            DeviceOutcome::PolicyViolation { .. } => "policy_violation",
            DeviceOutcome::Failed { .. } => "failed",
            DeviceOutcome::Unknown { .. } => "unknown",
        }
    }

    /// Whether the device ended as it should: assigned, or refused by policy.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            DeviceOutcome::Assigned { .. } | DeviceOutcome::PolicyViolation { .. }
        )
    }
}

/// How long the batch waited for an open breaker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerPauses {
    /// Times the batch stopped to wait for the breaker to admit a probe.
    pub pauses: u64,
    /// Seconds waited in all.
    pub seconds: f64,
}

/// The run's verdict, and its exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    /// `ok`, `devices_failed` or `run_failed`.
    pub status: String,
    /// 0 (`ok`), 2 (`devices_failed`) or 1 (`run_failed`).
    pub exit_code: u8,
    /// Why, in one sentence.
    pub reason: String,
}

impl RunResult {
    /// Every device `assigned` or `policy_violation`: exit status 0.
    pub const OK: u8 = 0;
    /// The run itself failed (listing, configuration): exit status 1.
    pub const RUN_FAILED: u8 = 1;
    /// A device ended `failed` or `unknown`: exit status 2.
    pub const DEVICES_FAILED: u8 = 2;

    /// The run failed before it could handle devices.
    pub fn run_failed(reason: impl Into<String>) -> RunResult {
        RunResult {
            status: "run_failed".into(),
            exit_code: RunResult::RUN_FAILED,
            reason: reason.into(),
        }
    }

    /// The verdict on a report's outcomes.
    pub fn of(report: &Report) -> RunResult {
        if let Some(e) = &report.run_error {
            return RunResult::run_failed(e.clone());
        }
        let count = |k: &str| report.devices_by_outcome.get(k).copied().unwrap_or(0);
        let (assigned, policy) = (count("assigned"), count("policy_violation"));
        let (failed, unknown) = (count("failed"), count("unknown"));
        if failed + unknown == 0 {
            return RunResult {
                status: "ok".into(),
                exit_code: RunResult::OK,
                reason: format!(
                    "every device assigned ({assigned}) or refused by policy ({policy})"
                ),
            };
        }
        let mut why = Vec::new();
        if failed > 0 {
            let classes: Vec<String> = report
                .failures_by_class
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            why.push(format!("{failed} failed ({})", classes.join(", ")));
        }
        if unknown > 0 {
            why.push(format!(
                "{unknown} unknown (a create may have been applied unseen)"
            ));
        }
        RunResult {
            status: "devices_failed".into(),
            exit_code: RunResult::DEVICES_FAILED,
            reason: format!(
                "{} of {} devices not settled: {}",
                failed + unknown,
                report.devices,
                why.join(", ")
            ),
        }
    }

    /// The report's last line: `result       ok: ...`.
    pub fn line(&self) -> String {
        let head = match self.status.as_str() {
            "ok" => "ok",
            "devices_failed" => "DEVICES FAILED",
            _ => "RUN FAILED",
        };
        format!(
            "result       {head} (exit {}): {}",
            self.exit_code, self.reason
        )
    }
}

/// The embedded server's view, from its own records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerView {
    /// Requests received.
    pub requests: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Creates applied.
    pub creates: usize,
    /// Device and app pairs created more than once.
    pub duplicates: usize,
    /// Requests sent before a `Retry-After` had passed.
    pub early_requests: usize,
    /// Requests that arrived inside their client's throttle window (past the grace).
    pub throttle_violations: usize,
    /// Tokens issued.
    pub tokens_issued: usize,
    /// Tokens that expired and were refused.
    pub tokens_expired: usize,
    /// Tokens issued while the previous one was still good.
    pub needless_refreshes: usize,
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Where the connector ran against.
    pub base_url: String,
    /// Whether the server was the embedded one.
    pub embedded_server: bool,
    /// Devices the server listed.
    pub listed: usize,
    /// The cap on devices handled (`--limit`), if one was set.
    pub limit: Option<usize>,
    /// Devices handled: every listed device, or the first `limit`.
    pub devices: usize,
    /// Fault rate of the embedded server.
    pub fault_rate: f64,
    /// Seed of the embedded server.
    pub seed: u64,
    /// Devices processed at once.
    pub concurrency: usize,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// Whether the listing worked and every device handled has an outcome.
    pub completed: bool,
    /// Why the run failed, if it did (the listing failed, say).
    pub run_error: Option<String>,
    /// Calls per operation.
    pub operations: Vec<OperationRow>,
    /// Devices by outcome: `assigned`, `policy_violation`, `failed`, `unknown`.
    pub devices_by_outcome: BTreeMap<String, usize>,
    /// Devices that ended `failed`, by the class of their error.
    pub failures_by_class: BTreeMap<String, usize>,
    /// Every device's outcome, in the listing's order.
    pub device_outcomes: Vec<DeviceOutcome>,
    /// Devices tried again at the end of the run (failed transiently, or unknown), with the same
    /// idempotency keys.
    pub retried_at_end: usize,
    /// Waits of the batch for an open breaker.
    pub breaker_pauses: BreakerPauses,
    /// Retries made.
    pub retries: u64,
    /// Waits made.
    pub waits: Waits,
    /// Calls that ended in an error, by why the engine stopped (`not_retryable`,
    /// `retries_exhausted`, `budget_exhausted`, `rejected`, ...).
    pub gave_up: BTreeMap<String, u64>,
    /// Token refreshes made (single-flight: one per expiry).
    pub token_refreshes: u64,
    /// Breaker transitions, in order.
    pub breaker_transitions: Vec<Transition>,
    /// The embedded server's records, summarised.
    pub server: Option<ServerView>,
    /// Replica processes whose reports this one merges (`--replicas N`); absent for one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<usize>,
    /// The shared backends each process used (`--redis-url`), as its health showed them at the
    /// end of its run; absent when nothing was shared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendView>,
    /// The verdict and exit status.
    pub result: RunResult,
}

/// A shared backend as one process saw it at the end of its run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    /// The replica (`--replica-index`) whose backend this is.
    pub replica: Option<usize>,
    /// The backend's name (`fleet`).
    pub name: String,
    /// `connecting`, `shared` or `fallback`.
    pub state: String,
    /// Round trips that failed or took longer than their limit.
    pub errors_total: u64,
    /// Times the backend went from sharing to answering from local state.
    pub fallbacks_total: u64,
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Devices assigned after a create met 409 and was resolved through `Location`.
    pub fn resolved_conflicts(&self) -> usize {
        self.device_outcomes
            .iter()
            .filter(|d| {
                matches!(
                    d,
                    DeviceOutcome::Assigned {
                        resolved_conflict: true,
                        ..
                    }
                )
            })
            .count()
    }

    /// Devices that ended neither assigned nor refused by policy.
    pub fn failures(&self) -> impl Iterator<Item = &DeviceOutcome> {
        self.device_outcomes.iter().filter(|d| !d.is_settled())
    }

    /// The process's exit status: see [`RunResult`].
    pub fn exit_code(&self) -> u8 {
        self.result.exit_code
    }

    /// One report for a fleet, from its replicas' reports (`None`: a replica that gave none,
    /// which fails the run): counts summed, devices' outcomes together in device id order,
    /// breaker transitions in time order, and the verdict taken again on the whole, so the exit
    /// status is the worst of the replicas'. `duration_seconds`, `server` and the embedded
    /// server's settings are the caller's to fill.
    ///
    /// ```
    /// use graph_connector::report::{Report, RunResult};
    ///
    /// let mut a = Report { devices: 2, completed: true, ..Report::default() };
    /// a.devices_by_outcome.insert("assigned".into(), 2);
    /// let mut b = Report { devices: 1, completed: true, ..Report::default() };
    /// b.devices_by_outcome.insert("unknown".into(), 1);
    /// let all = Report::merge(vec![Some(a), Some(b)]);
    /// assert_eq!((all.replicas, all.devices), (Some(2), 3));
    /// assert_eq!(all.exit_code(), RunResult::DEVICES_FAILED);
    /// ```
    pub fn merge(reports: Vec<Option<Report>>) -> Report {
        let mut all = Report {
            replicas: Some(reports.len()),
            completed: true,
            ..Report::default()
        };
        let mut errors = Vec::new();
        for (i, r) in reports.into_iter().enumerate() {
            let Some(r) = r else {
                all.completed = false;
                errors.push(format!("replica {i} gave no report"));
                continue;
            };
            all.base_url = r.base_url;
            all.listed = all.listed.max(r.listed);
            all.limit = r.limit;
            all.devices += r.devices;
            all.concurrency = r.concurrency;
            all.completed &= r.completed;
            if let Some(e) = r.run_error {
                errors.push(format!("replica {i}: {e}"));
            }
            for op in r.operations {
                match all
                    .operations
                    .iter_mut()
                    .find(|o| o.operation == op.operation)
                {
                    Some(o) => {
                        o.calls += op.calls;
                        o.ok += op.ok;
                        add_all(&mut o.errors, op.errors);
                        o.rejected += op.rejected;
                        o.retries += op.retries;
                        o.retry_successes += op.retry_successes;
                        o.refreshes += op.refreshes;
                    }
                    None => all.operations.push(op),
                }
            }
            add_all(&mut all.devices_by_outcome, r.devices_by_outcome);
            add_all(&mut all.failures_by_class, r.failures_by_class);
            all.device_outcomes.extend(r.device_outcomes);
            all.retried_at_end += r.retried_at_end;
            all.breaker_pauses.pauses += r.breaker_pauses.pauses;
            all.breaker_pauses.seconds += r.breaker_pauses.seconds;
            all.retries += r.retries;
            all.waits.total += r.waits.total;
            all.waits.retry_after += r.waits.retry_after;
            all.waits.seconds += r.waits.seconds;
            all.waits.retry_after_seconds += r.waits.retry_after_seconds;
            add_all(&mut all.gave_up, r.gave_up);
            all.token_refreshes += r.token_refreshes;
            all.breaker_transitions.extend(r.breaker_transitions);
            all.backends.extend(r.backends);
        }
        if !errors.is_empty() {
            all.run_error = Some(errors.join("; "));
        }
        all.device_outcomes
            .sort_by(|a, b| a.device_id().cmp(b.device_id()));
        all.breaker_transitions
            .sort_by(|a, b| a.at_seconds.total_cmp(&b.at_seconds));
        all.result = RunResult::of(&all);
        all
    }
}

fn add_all<K: Ord, V: std::ops::AddAssign + Default>(
    into: &mut BTreeMap<K, V>,
    from: BTreeMap<K, V>,
) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

fn pct(rate: f64) -> String {
    let p = rate * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

const CLASSES: [&str; 5] = [
    "transient",
    "throttled",
    "permanent",
    "policy_violation",
    "auth",
];

impl fmt::Display for Report {
    /// The readable summary table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = if self.embedded_server {
            format!(
                "embedded server {}, fault rate {}, seed {}",
                self.base_url,
                pct(self.fault_rate),
                self.seed
            )
        } else {
            format!("server {}", self.base_url)
        };
        writeln!(
            f,
            "graph_connector: {} devices, concurrency {}, {server}",
            self.devices, self.concurrency
        )?;
        match self.limit {
            Some(n) => writeln!(
                f,
                "limit        {n}: {} of the {} devices listed handled",
                self.devices, self.listed
            )?,
            None => writeln!(
                f,
                "limit        none: every device listed handled ({})",
                self.listed
            )?,
        }
        if let Some(n) = self.replicas {
            writeln!(
                f,
                "replicas     {n} processes, each handling the devices whose id hashes to it"
            )?;
        }
        if !self.backends.is_empty() {
            let b: Vec<String> = self
                .backends
                .iter()
                .map(|b| {
                    let who = b
                        .replica
                        .map(|i| format!("replica {i} "))
                        .unwrap_or_default();
                    format!(
                        "{who}{} {} ({} errors, {} fallbacks)",
                        b.name, b.state, b.errors_total, b.fallbacks_total
                    )
                })
                .collect();
            writeln!(f, "shared       {}", b.join(", "))?;
        }
        writeln!(f)?;

        // Operations by outcome and class.
        let w = self
            .operations
            .iter()
            .map(|o| o.operation.len())
            .chain(["operation".len()])
            .max()
            .unwrap_or(9);
        let head = [
            "calls",
            "ok",
            "transient",
            "throttled",
            "permanent",
            "policy",
            "auth",
            "rejected",
            "retries",
        ];
        let mut line = format!("{:<w$}", "operation");
        for h in head {
            let _ = write!(line, "  {h:>9}");
        }
        writeln!(f, "{line}")?;
        writeln!(f, "{}", "-".repeat(line.len()))?;
        for o in &self.operations {
            let mut line = format!("{:<w$}", o.operation);
            let mut cells = vec![o.calls, o.ok];
            cells.extend(
                CLASSES
                    .iter()
                    .map(|c| o.errors.get(*c).copied().unwrap_or(0)),
            );
            cells.extend([o.rejected, o.retries]);
            for c in cells {
                let _ = write!(line, "  {c:>9}");
            }
            writeln!(f, "{line}")?;
        }
        writeln!(f)?;

        // Devices by outcome.
        let count = |k: &str| self.devices_by_outcome.get(k).copied().unwrap_or(0);
        let via_409 = self.resolved_conflicts();
        let mut failed = format!("failed {}", count("failed"));
        if !self.failures_by_class.is_empty() {
            let classes: Vec<String> = self
                .failures_by_class
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = write!(failed, " ({})", classes.join(", "));
        }
        writeln!(
            f,
            "devices      assigned {} ({via_409} through 409 + Location), policy_violation {}, {failed}, unknown {}",
            count("assigned"),
            count("policy_violation"),
            count("unknown"),
        )?;
        for d in &self.device_outcomes {
            match d {
                DeviceOutcome::Failed {
                    device_id,
                    stage,
                    class,
                    code,
                    message,
                } => {
                    let code = code
                        .as_deref()
                        .map(|c| format!(" [{c}]"))
                        .unwrap_or_default();
                    writeln!(f, "  {device_id}: {stage} failed, {class}{code}: {message}")?;
                }
                DeviceOutcome::Unknown {
                    device_id,
                    idempotency_key,
                    message,
                } => writeln!(
                    f,
                    "  {device_id}: create outcome unknown (replay with Idempotency-Key {idempotency_key}): {message}"
                )?,
                _ => {}
            }
        }
        let policy: Vec<&str> = self
            .device_outcomes
            .iter()
            .filter(|d| matches!(d, DeviceOutcome::PolicyViolation { .. }))
            .map(DeviceOutcome::device_id)
            .collect();
        if !policy.is_empty() {
            writeln!(
                f,
                "policy       refused by tenant policy: {}",
                policy.join(", ")
            )?;
        }
        writeln!(
            f,
            "again        {} devices tried again at the end with the same idempotency key",
            self.retried_at_end
        )?;
        writeln!(
            f,
            "retries      {} ({:.1} s waited in all)",
            self.retries, self.waits.seconds
        )?;
        writeln!(
            f,
            "waits        {} honoured Retry-After ({:.1} s), {} backoff",
            self.waits.retry_after,
            self.waits.retry_after_seconds,
            self.waits.total.saturating_sub(self.waits.retry_after)
        )?;
        if !self.gave_up.is_empty() {
            let g: Vec<String> = self
                .gave_up
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(f, "gave up      {}", g.join(", "))?;
        }
        writeln!(f, "tokens       {} refreshed", self.token_refreshes)?;
        writeln!(
            f,
            "paused       {} times for an open breaker ({:.1} s)",
            self.breaker_pauses.pauses, self.breaker_pauses.seconds
        )?;
        if self.breaker_transitions.is_empty() {
            writeln!(f, "breakers     no transitions")?;
        } else {
            let t: Vec<String> = self
                .breaker_transitions
                .iter()
                .map(|t| format!("{} {}->{} at {:.1}s", t.breaker, t.from, t.to, t.at_seconds))
                .collect();
            writeln!(f, "breakers     {}", t.join(", "))?;
        }
        if let Some(s) = &self.server {
            let faults: usize = s.faults.values().sum();
            let kinds: Vec<String> = s.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(
                f,
                "server       {} requests, {faults} faults injected ({})",
                s.requests,
                if kinds.is_empty() {
                    "none".to_owned()
                } else {
                    kinds.join(", ")
                }
            )?;
            writeln!(
                f,
                "             {} creates, {} duplicates, {} requests before a Retry-After passed, {} inside a throttle window",
                s.creates, s.duplicates, s.early_requests, s.throttle_violations
            )?;
            writeln!(
                f,
                "             {} tokens issued ({} expired and refused, {} needless)",
                s.tokens_issued, s.tokens_expired, s.needless_refreshes
            )?;
        }
        writeln!(f, "duration     {:.2} s", self.duration_seconds)?;
        write!(f, "{}", self.result.line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report {
            base_url: "http://127.0.0.1:1".into(),
            embedded_server: true,
            listed: 3,
            limit: Some(3),
            devices: 3,
            fault_rate: 0.3,
            seed: 7,
            concurrency: 4,
            duration_seconds: 1.5,
            completed: true,
            operations: vec![OperationRow {
                operation: "create_assignment".into(),
                calls: 3,
                ok: 1,
                errors: [("policy_violation".to_owned(), 1)].into(),
                retries: 3,
                ..OperationRow::default()
            }],
            devices_by_outcome: [
                ("assigned".to_owned(), 1),
                ("policy_violation".to_owned(), 1),
                ("failed".to_owned(), 1),
            ]
            .into(),
            failures_by_class: [("transient".to_owned(), 1)].into(),
            device_outcomes: vec![
                DeviceOutcome::Assigned {
                    device_id: "dev-0001".into(),
                    assignment_id: "asg-000001".into(),
                    resolved_conflict: true,
                },
                DeviceOutcome::PolicyViolation {
                    device_id: "dev-0002".into(),
                    stage: "create".into(),
                    code: Some("403".into()),
                    message: "forbidden by policy".into(),
                },
                DeviceOutcome::Failed {
                    device_id: "dev-0003".into(),
                    stage: "create".into(),
                    class: "transient".into(),
                    code: Some("503".into()),
                    message: "http 503".into(),
                },
            ],
            retries: 3,
            server: Some(ServerView::default()),
            ..Report::default()
        };
        r.result = RunResult::of(&r);
        r
    }

    #[test]
    fn the_table_shows_operations_devices_and_the_result() {
        let t = sample().to_string();
        assert!(t.contains("fault rate 30%, seed 7"), "{t}");
        assert!(
            t.contains("limit        3: 3 of the 3 devices listed handled"),
            "{t}"
        );
        assert!(t.contains("create_assignment"), "{t}");
        assert!(
            t.contains(
                "assigned 1 (1 through 409 + Location), policy_violation 1, failed 1 (transient 1), unknown 0"
            ),
            "{t}"
        );
        assert!(
            t.contains("dev-0003: create failed, transient [503]"),
            "{t}"
        );
        assert!(t.contains("refused by tenant policy: dev-0002"), "{t}");
        let last = t.lines().last().unwrap();
        assert_eq!(
            last,
            "result       DEVICES FAILED (exit 2): 1 of 3 devices not settled: 1 failed (transient 1)"
        );
    }

    #[test]
    fn a_fleet_report_sums_its_replicas_and_fails_without_one_of_them() {
        let mut one = sample();
        one.backends.push(BackendView {
            replica: Some(0),
            name: "fleet".into(),
            state: "shared".into(),
            ..BackendView::default()
        });
        let mut two = sample();
        two.device_outcomes.truncate(2);
        two.devices_by_outcome.remove("failed");
        two.failures_by_class.clear();
        two.result = RunResult::of(&two);
        assert_eq!(two.exit_code(), 0);

        let all = Report::merge(vec![Some(one.clone()), Some(two.clone())]);
        assert_eq!((all.replicas, all.devices), (Some(2), 6));
        assert_eq!(all.operations[0].calls, 6);
        assert_eq!(all.devices_by_outcome["assigned"], 2);
        assert_eq!(
            all.exit_code(),
            RunResult::DEVICES_FAILED,
            "the worst replica's"
        );
        let ids: Vec<&str> = all.device_outcomes.iter().map(|d| d.device_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
        let t = all.to_string();
        assert!(t.contains("replicas     2 processes"), "{t}");
        assert!(t.contains("shared       replica 0 fleet shared"), "{t}");
        let v: serde_json::Value = serde_json::from_str(&all.to_json()).unwrap();
        assert_eq!(v["replicas"], 2);

        let lost = Report::merge(vec![Some(two), None]);
        assert_eq!(lost.exit_code(), RunResult::RUN_FAILED);
        assert_eq!(lost.run_error.as_deref(), Some("replica 1 gave no report"));

        // A single run's JSON has neither field.
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert!(v.get("replicas").is_none() && v.get("backends").is_none());
    }

    #[test]
    fn the_verdict_follows_the_outcomes() {
        let mut r = sample();
        assert_eq!(r.exit_code(), 2);
        r.devices_by_outcome.remove("failed");
        r.failures_by_class.clear();
        r.result = RunResult::of(&r);
        assert_eq!((r.result.status.as_str(), r.exit_code()), ("ok", 0));
        r.devices_by_outcome.insert("unknown".into(), 1);
        r.result = RunResult::of(&r);
        assert_eq!(r.exit_code(), 2);
        assert!(r.result.reason.contains("1 unknown"), "{:?}", r.result);
        r.run_error = Some("listing devices failed".into());
        r.result = RunResult::of(&r);
        assert_eq!((r.result.status.as_str(), r.exit_code()), ("run_failed", 1));
    }

    #[test]
    fn json_has_every_section() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        for k in [
            "operations",
            "devices_by_outcome",
            "failures_by_class",
            "limit",
            "listed",
            "retries",
            "waits",
            "breaker_transitions",
            "breaker_pauses",
            "duration_seconds",
            "server",
            "result",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert_eq!(v["limit"], 3);
        assert_eq!(v["device_outcomes"][0]["outcome"], "assigned");
        assert_eq!(v["device_outcomes"][1]["outcome"], "policy_violation");
        assert_eq!(v["device_outcomes"][2]["outcome"], "failed");
        assert_eq!(v["device_outcomes"][2]["class"], "transient");
        assert_eq!(v["result"]["exit_code"], 2);
        assert_eq!(v["operations"][0]["errors"]["policy_violation"], 1);
    }
}
