//! The caller: provisions through the service with `#[resilient]`, classifies every failure from
//! the status and its detail (found across the error's wrap chain), and reports.
//!
//! - a terminal reason (`ErrorInfo` in the status details) is never retried, and is reported
//!   with its reason and code;
//! - `UNAVAILABLE`, `ABORTED` and `DEADLINE_EXCEEDED` are transient: retried with backoff, with
//!   the same `request_id`, so a grant whose answer was lost is not made twice;
//! - a rate limit (`RESOURCE_EXHAUSTED` with a `RetryInfo`) is `throttled`: the call waits for
//!   the hint, and the hint pauses the `provisioner_client` limiter, so no call of this client is
//!   sent before it has passed.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilience_runtime::events::{self, EventSink, RuntimeEvent};
use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::tonic::{code_name, find_status, find_terminal};
use resilience_runtime::{
    Classify, ConnectorError, ErrorClass, Registry, Rejected, TerminalReason, resilient,
};
use serde::Serialize;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::proto::{GrantRequest, ProvisionerClient, RevokeRequest};
use crate::service::{CLIENT_ID, Records};

/// The breakers, budgets and limits of the caller.
pub const RESILIENCE_TOML: &str = r#"
[breakers.provisioner]
failure_threshold = 10
cooldown = "1s"
half_open_probes = 2

[budgets.provisioner]
# At 30% faults the default budget (a retry costs 5) would stop retrying: at 2, retries stop once
# more than a third of calls fail.
capacity = 100
retry_cost = 2

[rate_limits.provisioner_client]
# A permit per attempt; a rate limit's RetryInfo pauses the whole limiter.
rate = 500
per = "1s"
"#;

/// The registry a run uses, configured from [`RESILIENCE_TOML`].
///
/// # Panics
///
/// If the embedded configuration is invalid (a test checks it is not).
pub fn registry() -> Registry {
    let config = RegistryConfig::from_toml_str(RESILIENCE_TOML)
        .unwrap_or_else(|e| panic!("the provisioner's configuration: {e}"));
    let r = Registry::new();
    r.apply(&config);
    r
}

/// The status a call ended with, as the transport gave it.
#[derive(Debug, thiserror::Error)]
#[error("the provisioner answered {}", code_name(.0.code()))]
pub struct Answer(#[source] pub tonic::Status);

/// A failed call, with what it was about: the status is two links down the chain.
#[derive(Debug, thiserror::Error)]
#[error("{method} of {resource} to {user}")]
pub struct RpcError {
    /// `Grant` or `Revoke`.
    pub method: &'static str,
    /// The user.
    pub user: String,
    /// The resource.
    pub resource: String,
    /// What the server said.
    #[source]
    pub answer: Answer,
}

/// Classified from what the chain holds: a terminal reason decides (never retried), else the
/// status (a rate limit is `throttled` with its hint, `UNAVAILABLE` transient, ...).
impl Classify for RpcError {
    fn class(&self) -> ErrorClass {
        match find_terminal(self) {
            Some(t) => t.reason().class(),
            None => find_status(self).map_or(ErrorClass::Transient, Classify::class),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        find_status(self).and_then(Classify::retry_after)
    }
    fn code(&self) -> Option<&str> {
        find_status(self).and_then(Classify::code)
    }
    fn terminal_reason(&self) -> Option<TerminalReason> {
        find_terminal(self).map(|t| t.reason())
    }
}

/// Everything a provisioning call can fail with.
#[derive(Debug, thiserror::Error, ConnectorError)]
pub enum ProvisionError {
    /// The service answered with an error status.
    #[error(transparent)]
    #[connector(delegate)]
    Rpc(RpcError),
    /// The runtime stopped the call: open circuit, timeout, budget, rate limit.
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

/// A caller of the provisioner, as one client (`x-client-id`).
#[derive(Debug)]
pub struct Caller {
    channel: Channel,
    client_id: MetadataValue<tonic::metadata::Ascii>,
    /// Until when the server rate-limits this client, for a request an attempt sends after the
    /// limiter admitted it.
    throttled_until: Mutex<Option<tokio::time::Instant>>,
}

impl Caller {
    /// A caller of the service at `url` (`http://127.0.0.1:PORT`); it connects on first use.
    ///
    /// # Errors
    ///
    /// When the URL or the client id is invalid.
    pub fn new(url: &str, client_id: &str) -> Result<Caller, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("invalid address {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2));
        let client_id = client_id
            .parse()
            .map_err(|_| format!("invalid client id {client_id:?}"))?;
        Ok(Caller {
            channel: endpoint.connect_lazy(),
            client_id,
            throttled_until: Mutex::new(None),
        })
    }

    /// Connects now, to fail early when nothing listens.
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub async fn connect(url: &str, client_id: &str) -> Result<Caller, String> {
        let mut c = Caller::new(url, client_id)?;
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("invalid address {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2));
        c.channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(c)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert(CLIENT_ID, self.client_id.clone());
        r
    }

    async fn hold_while_throttled(&self) {
        loop {
            let until = *self
                .throttled_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match until {
                Some(u) if u > tokio::time::Instant::now() => tokio::time::sleep_until(u).await,
                _ => return,
            }
        }
    }

    fn failed(
        &self,
        method: &'static str,
        user: &str,
        resource: &str,
        s: tonic::Status,
    ) -> ProvisionError {
        if let Some(wait) = resilience_runtime::tonic::retry_delay(&s) {
            let until = tokio::time::Instant::now() + wait;
            let mut t = self
                .throttled_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            *t = Some(t.map_or(until, |u| u.max(until)));
        }
        ProvisionError::Rpc(RpcError {
            method,
            user: user.to_owned(),
            resource: resource.to_owned(),
            answer: Answer(s),
        })
    }

    /// `Grant`, idempotent by `request_id`.
    #[resilient(
        retries = 6,
        backoff(base = "50ms", max = "1s"),
        breaker = "provisioner",
        rate_limit = "provisioner_client",
        idempotent,
        timeout = "2s",
        deadline = "30s"
    )]
    pub async fn grant(&self, req: &GrantRequest) -> Result<String, ProvisionError> {
        self.hold_while_throttled().await;
        let mut client = ProvisionerClient::new(self.channel.clone());
        match client.grant(self.request(req.clone())).await {
            Ok(r) => Ok(r.into_inner().grant_id),
            Err(s) => Err(self.failed("Grant", &req.user_id, &req.resource_id, s)),
        }
    }

    /// `Revoke`, idempotent.
    #[resilient(
        retries = 6,
        backoff(base = "50ms", max = "1s"),
        breaker = "provisioner",
        rate_limit = "provisioner_client",
        idempotent,
        timeout = "2s",
        deadline = "30s"
    )]
    pub async fn revoke(&self, req: &RevokeRequest) -> Result<bool, ProvisionError> {
        self.hold_while_throttled().await;
        let mut client = ProvisionerClient::new(self.channel.clone());
        match client.revoke(self.request(req.clone())).await {
            Ok(r) => Ok(r.into_inner().was_granted),
            Err(s) => Err(self.failed("Revoke", &req.user_id, &req.resource_id, s)),
        }
    }
}

/// One operation of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A grant.
    Grant(GrantRequest),
    /// A revocation.
    Revoke(RevokeRequest),
}

impl Op {
    /// The operation's `request_id`.
    pub fn request_id(&self) -> &str {
        match self {
            Op::Grant(r) => &r.request_id,
            Op::Revoke(r) => &r.request_id,
        }
    }
}

/// The run's workload: `n` operations over users and resources chosen so that every terminal
/// reason of the embedded service is met (see [`crate::service`]): users ending in 3 are
/// suspended, groups ending in 5 are rule-governed, `app-licensed` has few seats, malformed user
/// ids fail validation, `role-admin` is not permitted; one in ten operations is a revocation.
pub fn workload(n: usize) -> Vec<Op> {
    (0..n)
        .map(|i| {
            let request_id = format!("req-{i:05}");
            let user = match i % 10 {
                8 => format!("user-{i:04}!"),
                _ => format!("user-{i:04}"),
            };
            let resource = match i % 10 {
                5 => format!("group-{:04}", i),
                7 => "app-licensed".to_owned(),
                9 => "role-admin".to_owned(),
                _ => format!("group-{:04}", (i / 10) * 10 + 1),
            };
            if i % 10 == 0 {
                Op::Revoke(RevokeRequest {
                    request_id,
                    user_id: user,
                    resource_id: resource,
                })
            } else {
                Op::Grant(GrantRequest {
                    request_id,
                    user_id: user,
                    resource_id: resource,
                })
            }
        })
        .collect()
}

/// How one operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Granted.
    Granted {
        /// The request.
        request_id: String,
        /// The grant.
        grant_id: String,
    },
    /// Revoked (or there was nothing to revoke).
    Revoked {
        /// The request.
        request_id: String,
        /// Whether there was a grant.
        was_granted: bool,
    },
    /// Refused for good by the upstream: not retried; an administrator must act.
    Terminal {
        /// The request.
        request_id: String,
        /// The reason (`license_exhausted`, ...).
        reason: String,
        /// The gRPC code it came with.
        code: String,
        /// The service's detail.
        detail: String,
    },
    /// Failed for another reason; the class says whether trying later may help.
    Failed {
        /// The request.
        request_id: String,
        /// The error's class.
        class: String,
        /// The gRPC code, or the runtime's rejection.
        code: Option<String>,
        /// The error's message.
        message: String,
    },
}

impl Outcome {
    /// The outcome's name.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Granted { .. } => "granted",
            Outcome::Revoked { .. } => "revoked",
            Outcome::Terminal { .. } => "terminal",
            Outcome::Failed { .. } => "failed",
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

fn outcome_of(request_id: &str, e: &ProvisionError) -> Outcome {
    if let Some(t) = find_terminal(e) {
        return Outcome::Terminal {
            request_id: request_id.to_owned(),
            reason: t.reason().as_str().to_owned(),
            code: e.code().unwrap_or("UNKNOWN").to_owned(),
            detail: t.detail().to_owned(),
        };
    }
    Outcome::Failed {
        request_id: request_id.to_owned(),
        class: e.class().as_str().to_owned(),
        code: e.code().map(str::to_owned),
        message: chain(e),
    }
}

/// Runs one operation.
pub async fn perform(caller: &Caller, op: &Op) -> Outcome {
    match op {
        Op::Grant(r) => match caller.grant(r).await {
            Ok(grant_id) => Outcome::Granted {
                request_id: r.request_id.clone(),
                grant_id,
            },
            Err(e) => outcome_of(&r.request_id, &e),
        },
        Op::Revoke(r) => match caller.revoke(r).await {
            Ok(was_granted) => Outcome::Revoked {
                request_id: r.request_id.clone(),
                was_granted,
            },
            Err(e) => outcome_of(&r.request_id, &e),
        },
    }
}

/// Counts the runtime's retries and waits during a run.
#[derive(Debug, Default)]
struct Observer {
    retries: AtomicU64,
    hinted: AtomicU64,
    hinted_micros: AtomicU64,
}

impl EventSink for Observer {
    fn on_event(&self, event: &RuntimeEvent<'_>) {
        if let RuntimeEvent::Retry {
            wait, retry_after, ..
        } = *event
        {
            self.retries.fetch_add(1, Ordering::Relaxed);
            if retry_after {
                self.hinted.fetch_add(1, Ordering::Relaxed);
                self.hinted_micros
                    .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
            }
        }
    }
}

/// The server's view of a run, from its records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ServerView {
    /// Requests received.
    pub requests: usize,
    /// Requests by the code answered.
    pub by_code: BTreeMap<String, usize>,
    /// Grants applied.
    pub grants: usize,
    /// `(user, resource)` pairs granted twice.
    pub duplicates: usize,
    /// Requests sent again after a terminal answer.
    pub retries_of_terminal: usize,
    /// Rate limits sent.
    pub rate_limits: usize,
    /// Requests that came inside their client's rate-limit window.
    pub window_violations: usize,
}

impl ServerView {
    /// The view of `records`.
    pub fn of(records: &Records) -> ServerView {
        ServerView {
            requests: records.requests.len(),
            by_code: records
                .by_code()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            grants: records.grants.len(),
            duplicates: records.duplicates().len(),
            retries_of_terminal: records.retries_of_terminal().len(),
            rate_limits: records.rate_limits(),
            window_violations: records.window_violations().len(),
        }
    }
}

/// The run's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// The service's address.
    pub addr: String,
    /// Whether it was the embedded one.
    pub embedded_server: bool,
    /// Its fault rate and seed (embedded only).
    pub fault_rate: f64,
    /// The seed.
    pub seed: u64,
    /// Operations run.
    pub operations: usize,
    /// Operations by outcome: `granted`, `revoked`, `terminal`, `failed`.
    pub by_outcome: BTreeMap<String, usize>,
    /// Terminal refusals by reason, with the code they came with.
    pub terminal: BTreeMap<String, TerminalRow>,
    /// Failures by class.
    pub failed_by_class: BTreeMap<String, usize>,
    /// Every operation's outcome, in order.
    pub outcomes: Vec<Outcome>,
    /// Retries made.
    pub retries: u64,
    /// Waits set by a rate limit's hint, and the seconds they took.
    pub hinted_waits: u64,
    /// Seconds of those waits.
    pub hinted_seconds: f64,
    /// Seconds the run took.
    pub duration_seconds: f64,
    /// The embedded server's records.
    pub server: Option<ServerView>,
    /// 0 when no operation failed, 2 when one did, 1 when the run could not start.
    pub exit_code: u8,
    /// Why.
    pub result: String,
}

/// One terminal reason's count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TerminalRow {
    /// The gRPC code it came with.
    pub code: String,
    /// How many operations met it.
    pub count: usize,
}

impl Report {
    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The last line: the verdict and why.
    pub fn result_line(&self) -> String {
        let head = if self.exit_code == 0 {
            "ok"
        } else {
            "OPERATIONS FAILED"
        };
        format!(
            "result       {head} (exit {}): {}",
            self.exit_code, self.result
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let server = if self.embedded_server {
            format!(
                "embedded server {}, fault rate {:.0}%, seed {}",
                self.addr,
                self.fault_rate * 100.0,
                self.seed
            )
        } else {
            format!("server {}", self.addr)
        };
        writeln!(
            f,
            "grpc_provisioner: {} operations, {server}",
            self.operations
        )?;
        writeln!(f)?;
        let n = |k: &str| self.by_outcome.get(k).copied().unwrap_or(0);
        writeln!(
            f,
            "outcomes     granted {}, revoked {}, terminal {}, failed {}",
            n("granted"),
            n("revoked"),
            n("terminal"),
            n("failed")
        )?;
        for (reason, row) in &self.terminal {
            writeln!(
                f,
                "terminal     {reason} ({}): {}, not retried",
                row.code, row.count
            )?;
        }
        for o in &self.outcomes {
            if let Outcome::Failed {
                request_id,
                class,
                code,
                message,
            } = o
            {
                let code = code
                    .as_deref()
                    .map(|c| format!(" [{c}]"))
                    .unwrap_or_default();
                writeln!(f, "  {request_id}: failed, {class}{code}: {message}")?;
            }
        }
        writeln!(
            f,
            "retries      {} ({} waited for a rate limit's hint, {:.1} s)",
            self.retries, self.hinted_waits, self.hinted_seconds
        )?;
        if let Some(s) = &self.server {
            let codes: Vec<String> = s.by_code.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(
                f,
                "server       {} requests ({})",
                s.requests,
                codes.join(", ")
            )?;
            writeln!(
                f,
                "             {} grants, {} duplicates, {} retries of a terminal answer, {} rate limits, {} requests inside a rate-limit window",
                s.grants, s.duplicates, s.retries_of_terminal, s.rate_limits, s.window_violations
            )?;
        }
        writeln!(f, "duration     {:.2} s", self.duration_seconds)?;
        write!(f, "{}", self.result_line())
    }
}

/// Runs `ops`, at most `concurrency` at once, in `registry`, and reports.
pub async fn run(
    caller: Arc<Caller>,
    registry: &Registry,
    ops: Vec<Op>,
    concurrency: usize,
) -> Report {
    let started = Instant::now();
    let observer = Arc::new(Observer::default());
    let sink: Arc<dyn EventSink> = observer.clone();
    events::add_sink(sink.clone());
    let queue = Arc::new(Mutex::new(
        ops.into_iter()
            .enumerate()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let total = queue.lock().unwrap_or_else(|p| p.into_inner()).len();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, total.max(1)) {
        let (queue, caller) = (queue.clone(), caller.clone());
        workers.spawn(registry.scope(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, op)) = next else { break };
                out.push((i, perform(&caller, &op).await));
            }
            out
        }));
    }
    let mut outcomes = Vec::with_capacity(total);
    while let Some(j) = workers.join_next().await {
        match j {
            Ok(out) => outcomes.extend(out),
            Err(e) => tracing::error!(error = %e, "a worker panicked"),
        }
    }
    events::remove_sink(&sink);
    outcomes.sort_by_key(|(i, _)| *i);
    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|(_, o)| o).collect();

    let mut report = Report {
        operations: total,
        retries: observer.retries.load(Ordering::Relaxed),
        hinted_waits: observer.hinted.load(Ordering::Relaxed),
        hinted_seconds: observer.hinted_micros.load(Ordering::Relaxed) as f64 / 1e6,
        duration_seconds: started.elapsed().as_secs_f64(),
        ..Report::default()
    };
    for o in &outcomes {
        *report.by_outcome.entry(o.name().to_owned()).or_insert(0) += 1;
        match o {
            Outcome::Terminal { reason, code, .. } => {
                let row = report.terminal.entry(reason.clone()).or_default();
                row.code.clone_from(code);
                row.count += 1;
            }
            Outcome::Failed { class, .. } => {
                *report.failed_by_class.entry(class.clone()).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    report.outcomes = outcomes;
    let failed = report.by_outcome.get("failed").copied().unwrap_or(0);
    let terminal: usize = report.terminal.values().map(|r| r.count).sum();
    if failed == 0 {
        report.exit_code = 0;
        report.result = format!(
            "every operation done ({}) or refused for good with its reason ({terminal})",
            total - terminal
        );
    } else {
        let classes: Vec<String> = report
            .failed_by_class
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        report.exit_code = 2;
        report.result = format!(
            "{failed} of {total} operations failed ({})",
            classes.join(", ")
        );
    }
    report
}
