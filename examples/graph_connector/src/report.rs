//! The run's summary: a table for people, one JSON object for machines.
//!
//! The report holds plain data (names of classes, counts, seconds), so it can be filled by the
//! connector from the runtime's metrics and events, and by the server's records when the server is
//! the embedded one.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::Serialize;

/// One operation's calls, by outcome and class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

impl DeviceOutcome {
    /// The device.
    pub fn device_id(&self) -> &str {
        match self {
            DeviceOutcome::Assigned { device_id, .. } | DeviceOutcome::Failed { device_id, .. } => {
                device_id
            }
        }
    }
}

/// The embedded server's view, from its own records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
    /// Tokens issued.
    pub tokens_issued: usize,
    /// Tokens that expired and were refused.
    pub tokens_expired: usize,
    /// Tokens issued while the previous one was still good.
    pub needless_refreshes: usize,
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Where the connector ran against.
    pub base_url: String,
    /// Whether the server was the embedded one.
    pub embedded_server: bool,
    /// Devices asked for (embedded server) or listed.
    pub devices: usize,
    /// Fault rate of the embedded server.
    pub fault_rate: f64,
    /// Seed of the embedded server.
    pub seed: u64,
    /// Devices processed at once.
    pub concurrency: usize,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// Whether every device ended assigned or with a classified error, and the listing worked.
    pub completed: bool,
    /// Why the run failed, if it did (the listing failed, say).
    pub run_error: Option<String>,
    /// Calls per operation.
    pub operations: Vec<OperationRow>,
    /// Devices by outcome: `assigned`, then the error classes.
    pub devices_by_outcome: BTreeMap<String, usize>,
    /// Every device's outcome.
    pub device_outcomes: Vec<DeviceOutcome>,
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

    /// Devices that were not assigned.
    pub fn failures(&self) -> impl Iterator<Item = &DeviceOutcome> {
        self.device_outcomes
            .iter()
            .filter(|d| matches!(d, DeviceOutcome::Failed { .. }))
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
        let assigned = self
            .devices_by_outcome
            .get("assigned")
            .copied()
            .unwrap_or(0);
        let via_409 = self.resolved_conflicts();
        let mut parts = vec![format!(
            "assigned {assigned} ({via_409} through 409 + Location)"
        )];
        for (k, v) in &self.devices_by_outcome {
            if k != "assigned" {
                parts.push(format!("{k} {v}"));
            }
        }
        writeln!(f, "devices      {}", parts.join(", "))?;
        for d in self.failures() {
            if let DeviceOutcome::Failed {
                device_id,
                stage,
                class,
                code,
                message,
            } = d
            {
                let code = code
                    .as_deref()
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default();
                writeln!(f, "  {device_id}: {stage} failed, {class}{code}: {message}")?;
            }
        }
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
                "             {} creates, {} duplicates, {} requests before a Retry-After passed, {} tokens issued ({} expired, {} needless)",
                s.creates,
                s.duplicates,
                s.early_requests,
                s.tokens_issued,
                s.tokens_expired,
                s.needless_refreshes
            )?;
        }
        writeln!(f, "duration     {:.2} s", self.duration_seconds)?;
        match &self.run_error {
            Some(e) => write!(f, "result       FAILED: {e}"),
            None if self.completed => write!(
                f,
                "result       ok: every device assigned or reported with its class"
            ),
            None => write!(f, "result       incomplete"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            base_url: "http://127.0.0.1:1".into(),
            embedded_server: true,
            devices: 2,
            fault_rate: 0.3,
            seed: 7,
            concurrency: 4,
            duration_seconds: 1.5,
            completed: true,
            operations: vec![OperationRow {
                operation: "create_assignment".into(),
                calls: 2,
                ok: 1,
                errors: [("policy_violation".to_owned(), 1)].into(),
                retries: 3,
                ..OperationRow::default()
            }],
            devices_by_outcome: [
                ("assigned".to_owned(), 1),
                ("policy_violation".to_owned(), 1),
            ]
            .into(),
            device_outcomes: vec![
                DeviceOutcome::Assigned {
                    device_id: "dev-0001".into(),
                    assignment_id: "asg-000001".into(),
                    resolved_conflict: true,
                },
                DeviceOutcome::Failed {
                    device_id: "dev-0002".into(),
                    stage: "create".into(),
                    class: "policy_violation".into(),
                    code: Some("403".into()),
                    message: "forbidden by policy".into(),
                },
            ],
            retries: 3,
            server: Some(ServerView::default()),
            ..Report::default()
        }
    }

    #[test]
    fn the_table_shows_operations_devices_and_the_result() {
        let t = sample().to_string();
        assert!(t.contains("fault rate 30%, seed 7"), "{t}");
        assert!(t.contains("create_assignment"), "{t}");
        assert!(
            t.contains("assigned 1 (1 through 409 + Location), policy_violation 1"),
            "{t}"
        );
        assert!(
            t.contains("dev-0002: create failed, policy_violation [403]"),
            "{t}"
        );
        assert!(t.ends_with("result       ok: every device assigned or reported with its class"));
    }

    #[test]
    fn json_has_every_section() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        for k in [
            "operations",
            "devices_by_outcome",
            "retries",
            "waits",
            "breaker_transitions",
            "duration_seconds",
            "server",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert_eq!(v["device_outcomes"][1]["outcome"], "failed");
        assert_eq!(v["operations"][0]["errors"]["policy_violation"], 1);
    }
}
