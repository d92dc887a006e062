//! The fault-injection suite.
//!
//! The example's connector against its embedded server over real loopback HTTP, at several
//! concurrency levels, with a seeded mix of 429 (`Retry-After` in seconds and as an HTTP date),
//! 500/503/504, answers later than the client's timeout, connection resets, responses lost after
//! the request was applied, and an outage window that opens the `graph` breaker. Checked from the
//! server's records, joined with the client's log of what it sent (by `client-request-id`) and with
//! the breaker transitions the runtime reported:
//!
//! - no lost operation: every operation ends in success or a classified error, and every success
//!   is backed by the server (the assignment exists with the call's idempotency key, the page walk
//!   saw every device);
//! - no duplicate create, though creates were retried after lost responses;
//! - no request before a `Retry-After` had passed;
//! - no attempt sent while the breaker was open, and at most `half_open_probes` at once while it
//!   was half-open;
//! - every call ended within its `deadline`.
//!
//! Breaker events are process-wide: this file holds one test, so it runs alone in its binary.
//!
//! `RESILIENCE_FAULT_OPS=N` sets the number of logical operations (default 10,000). The figures
//! are printed with `--nocapture`:
//!
//! ```text
//! cargo test -p graph_connector --test fault_suite -- --nocapture
//! RESILIENCE_FAULT_OPS=50000 cargo test -p graph_connector --test fault_suite -- --nocapture
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graph_connector::connector::{
    self, APP, BLOCKED_APP, GraphClient, GraphError, SendLog, Sent, intent_for,
};
use graph_connector::server::{FaultKind, GraphServer, Records, ServerConfig};
use resilience_runtime::breaker::BreakerState;
use resilience_runtime::events::{self, EventSink, RuntimeEvent};
use resilience_runtime::limit::{Gcra, RateLimit};
use resilience_runtime::{Classify, ErrorClass};

/// Logical operations in the default run: list pages, creates and reads, all counted.
const DEFAULT_OPS: usize = 10_000;
/// Concurrency levels, each with its share of the operations in percent.
const LEVELS: [(usize, usize); 3] = [(4, 4), (16, 20), (64, 76)];
const SEED: u64 = 20_260_107;
const FAULT_RATE: f64 = 0.12;
const DEVICES: usize = 120;
/// Every `/v1.0` request gets `503` in this window (from each phase's server start).
const OUTAGE: Range<Duration> = Duration::from_millis(1000)..Duration::from_millis(2500);
/// Admission and send are one synchronous step of the attempt, but the breaker's transition is
/// stamped by the sink after its compare-and-swap: a send this close to a transition is counted
/// on the side the race allows (and reported), not as a violation.
const RACE: Duration = Duration::from_millis(10);
/// Timer and scheduling slack allowed past a deadline.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// The `/v1.0` operations of the connector, as its sites name them.
const OPERATIONS: [&str; 3] = ["list_page", "create_assignment", "read_assignment"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_suite() {
    let total = std::env::var("RESILIENCE_FAULT_OPS")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse::<usize>().ok())
        .unwrap_or(DEFAULT_OPS);
    let deadlines: HashMap<&'static str, Duration> = OPERATIONS
        .into_iter()
        .map(|op| (op, deadline_of(op)))
        .collect();

    let events = Arc::new(EventLog::default());
    let sink: Arc<dyn EventSink> = events.clone();
    events::add_sink(sink.clone());

    let mut phases = Vec::new();
    let mut assigned = 0;
    for (i, &(concurrency, share)) in LEVELS.iter().enumerate() {
        let ops = if i + 1 == LEVELS.len() {
            total - assigned
        } else {
            total * share / 100
        };
        assigned += ops;
        phases.push(run_phase(i, concurrency, ops, &deadlines, &events).await);
    }
    events::remove_sink(&sink);

    let summary = Summary::of(&phases);
    println!("{}", summary.table(&phases, total));

    // Every fault kind was met, both Retry-After forms included, and the outage was met.
    for kind in FaultKind::RANDOM.into_iter().chain([FaultKind::Outage]) {
        assert!(
            summary.faults.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind} injected: {:?}",
            summary.faults
        );
    }
    for (p, c) in phases.iter().zip(&summary.checks) {
        assert!(
            c.opened >= 1 && c.closed_again >= 1 && c.probes >= 1,
            "at concurrency {} the outage opened the breaker and a probe closed it: {:?}",
            p.concurrency,
            p.transitions
        );
    }
    assert_eq!(summary.ops, total);
    assert_eq!(summary.lost, 0, "lost operations");
    assert_eq!(summary.duplicates, 0, "duplicate creates");
    assert_eq!(summary.early, 0, "requests before Retry-After passed");
    assert_eq!(
        summary.unlogged, 0,
        "server requests the client did not log"
    );
    assert_eq!(
        summary.open_violations, 0,
        "attempts sent to an open breaker"
    );
    assert_eq!(
        summary.probe_overruns, 0,
        "more probes at once than allowed"
    );
    assert_eq!(summary.deadline_overruns, 0, "calls past their deadline");
    assert!(
        summary.ok * 100 >= summary.ops * 85,
        "most operations succeed: {} of {}",
        summary.ok,
        summary.ops
    );
}

/// A rate limiter that paces but is never paused: see `run_phase`.
#[derive(Debug)]
struct PacingOnly(Gcra);

impl RateLimit for PacingOnly {
    fn try_acquire(&self) -> Result<(), Duration> {
        self.0.try_acquire()
    }
}

/// The deadline the connector declares for `operation`; checked against the site's policy when
/// the runtime lists its sites.
fn deadline_of(operation: &str) -> Duration {
    let declared = match operation {
        "read_assignment" => connector::READ_DEADLINE,
        _ => connector::CALL_DEADLINE,
    };
    if let Some(p) = resilience_runtime::sites::all()
        .map(|s| s.policy())
        .find(|p| p.operation == operation && p.module.starts_with("graph_connector"))
    {
        assert_eq!(p.deadline, Some(declared), "{operation}");
    }
    declared
}

// ---------------------------------------------------------------------------------------------
// The workload.

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    List,
    Create,
    Read,
}

impl Kind {
    fn operation(self) -> &'static str {
        match self {
            Kind::List => "list_page",
            Kind::Create => "create_assignment",
            Kind::Read => "read_assignment",
        }
    }
}

/// One logical operation and how it ended, as the caller saw it.
#[derive(Debug)]
struct Op {
    kind: Kind,
    took: Duration,
    deadline: Duration,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// A page: its devices, and whether the walk it belongs to ended with it.
    Page {
        walk: (usize, usize),
        devices: Vec<String>,
        last: bool,
    },
    /// A create: the assignment's id, the idempotency key sent, and whether it came from a 409.
    Created {
        id: String,
        key: String,
        device_id: String,
        app_id: String,
        conflict: bool,
    },
    /// A read.
    Read { asked: String, got: String },
    /// A classified error.
    Failed { class: ErrorClass, code: String },
}

fn failed(e: &GraphError) -> Outcome {
    Outcome::Failed {
        class: e.class(),
        code: match e {
            GraphError::Rejected(r) => r.kind().to_owned(),
            other => other.code().unwrap_or("-").to_owned(),
        },
    }
}

struct Phase {
    concurrency: usize,
    ops: Vec<Op>,
    /// Creates that ended in a transient error, issued again at the end of the phase.
    reconciled: Vec<(String, Outcome)>,
    records: Records,
    sent: Vec<Sent>,
    transitions: Vec<(Instant, BreakerState, BreakerState)>,
    stamps: Vec<(u32, Duration, BreakerState)>,
    probes_allowed: u32,
    cooldown: Duration,
    gave_up: BTreeMap<String, usize>,
    retries: usize,
    retry_after_waits: usize,
    walks_completed: usize,
    took: Duration,
    panicked: usize,
    server_started: Instant,
}

struct Shared {
    base_url: String,
    phase: usize,
    next: AtomicUsize,
    total: usize,
    deadlines: HashMap<&'static str, Duration>,
    log: Arc<SendLog>,
}

async fn run_phase(
    index: usize,
    concurrency: usize,
    ops: usize,
    deadlines: &HashMap<&'static str, Duration>,
    events: &EventLog,
) -> Phase {
    let server = GraphServer::start(
        ServerConfig::new()
            .with_devices(DEVICES)
            .with_max_page_size(1000)
            .with_faults(FAULT_RATE, SEED ^ (index as u64) << 32)
            .with_fault_weight(FaultKind::LostResponse, 2)
            .with_policy_app(BLOCKED_APP)
            .with_retry_after(Duration::from_secs(1))
            // Later than the connector's 2 s attempt timeout.
            .with_slow_response(Duration::from_millis(2200))
            .with_consistency_delay(Duration::ZERO)
            .with_outage(OUTAGE),
    )
    .await
    .expect("bind 127.0.0.1");
    let registry = connector::registry();
    // The workers are distinct OAuth clients (a `GraphClient` each) in one registry, and the
    // server throttles each client apart: the `graph_client` limiter, paused by one client's 429,
    // would hold back every other client too. Here it only paces; each client keeps out of its
    // own throttle window by itself (asserted below from the server's records).
    registry.set_rate_limit(
        connector::RATE_LIMIT,
        Arc::new(PacingOnly(Gcra::new(500, Duration::from_secs(1)))),
    );
    let breaker = registry.breaker("graph");
    let (probes_allowed, cooldown) = (breaker.config().half_open_probes, breaker.config().cooldown);
    events.reset();

    let shared = Arc::new(Shared {
        base_url: server.base_url().to_owned(),
        phase: index,
        next: AtomicUsize::new(0),
        total: ops,
        deadlines: deadlines.clone(),
        log: Arc::new(SendLog::new()),
    });
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        workers.spawn(registry.scope(worker(shared.clone(), w)));
    }
    let mut done = Vec::with_capacity(ops);
    let mut reconciled = Vec::new();
    let mut walks_completed = 0;
    let mut panicked = 0;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((out, again, walks)) => {
                done.extend(out);
                reconciled.extend(again);
                walks_completed += walks;
            }
            Err(e) => {
                eprintln!("worker failed: {e}");
                panicked += 1;
            }
        }
    }
    let took = started.elapsed();
    let ev = events.take();
    let records = server.records();
    let inside = records.throttle_violations();
    assert!(
        inside.is_empty(),
        "at concurrency {concurrency}, requests inside their client's throttle window: {inside:#?}"
    );
    Phase {
        concurrency,
        ops: done,
        reconciled,
        records,
        sent: shared.log.snapshot(),
        transitions: ev.transitions,
        stamps: ev.stamps,
        probes_allowed,
        cooldown,
        gave_up: ev.gave_up,
        retries: ev.retries,
        retry_after_waits: ev.retry_after_waits,
        walks_completed,
        took,
        panicked,
        server_started: server.started(),
    }
}

/// Claims operations until the phase's count is reached. Returns the operations and the number of
/// page walks it completed.
async fn worker(shared: Arc<Shared>, w: usize) -> (Vec<Op>, Vec<(String, Outcome)>, usize) {
    let client_id = format!("p{}-w{w:02}", shared.phase);
    let client = GraphClient::new(shared.base_url.as_str(), client_id.as_str())
        .expect("http client")
        .with_send_log(shared.log.clone());
    let mut rng = Rng(SEED ^ ((shared.phase as u64) << 40) ^ (w as u64));
    let mut out = Vec::new();
    let mut to_read: VecDeque<String> = VecDeque::new();
    // The walk in progress: its page size and next page. Each walk of this client asks for its
    // own page size, so no two walks share a URL: a `Retry-After` binds the request it answered,
    // and every logical operation is a distinct request to the server.
    let mut walk: Option<(usize, String)> = None;
    let mut next_top = 5;
    let mut walks_completed = 0;
    let mut creates = 0usize;
    let mut retry_later = Vec::new();

    while shared.next.fetch_add(1, Ordering::Relaxed) < shared.total {
        let r = rng.unit();
        let kind = if r < 0.30 {
            Kind::List
        } else if r < 0.55 && !to_read.is_empty() {
            Kind::Read
        } else {
            Kind::Create
        };
        let deadline = shared.deadlines[kind.operation()];
        let t0 = Instant::now();
        let outcome = match kind {
            Kind::List => {
                let (top, url) = walk.take().unwrap_or_else(|| {
                    let top = next_top;
                    next_top += 1;
                    assert!(top <= 1000, "page sizes must stay distinct per walk");
                    (top, format!("{}/v1.0/devices?$top={top}", shared.base_url))
                });
                match client.list_page(&url).await {
                    Ok(page) => {
                        let last = page.next_link.is_none();
                        if let Some(next) = page.next_link {
                            walk = Some((top, next));
                        } else {
                            walks_completed += 1;
                        }
                        Outcome::Page {
                            walk: (w, top),
                            devices: page.value.into_iter().map(|d| d.id).collect(),
                            last,
                        }
                    }
                    // The walk stops at a page that failed for good; the next starts afresh.
                    Err(e) => failed(&e),
                }
            }
            Kind::Create => {
                creates += 1;
                let device_id = format!("dev-{client_id}-{creates:05}");
                let app_id = if creates.is_multiple_of(25) {
                    BLOCKED_APP
                } else {
                    APP
                };
                let intent = intent_for(&device_id, app_id);
                let key = format!("{intent}-create-assignment");
                match client.create_assignment(&intent, &device_id, app_id).await {
                    Ok(a) => {
                        to_read.push_back(a.id.clone());
                        Outcome::Created {
                            id: a.id,
                            key,
                            device_id,
                            app_id: app_id.to_owned(),
                            conflict: a.resolved_conflict,
                        }
                    }
                    Err(e) => {
                        if e.class() == ErrorClass::Transient {
                            retry_later.push((intent, device_id, app_id));
                        }
                        failed(&e)
                    }
                }
            }
            Kind::Read => {
                let id = to_read.pop_front().expect("something to read");
                match client.read_assignment(&id).await {
                    Ok(a) => Outcome::Read {
                        asked: id,
                        got: a.id,
                    },
                    Err(e) => failed(&e),
                }
            }
        };
        let took = t0.elapsed();
        // A caller told that the circuit is open comes back when the breaker says it will let a
        // probe through, as a real scheduler would; without this pause the workers would spend
        // the operations of the run on instant rejections.
        let pause = match &outcome {
            Outcome::Failed { code, .. } if code == "circuit_open" => Some(rng.pause()),
            _ => None,
        };
        out.push(Op {
            kind,
            took,
            deadline,
            outcome,
        });
        if let Some(p) = pause {
            tokio::time::sleep(p).await;
        }
    }
    // The caller's side of "nothing lost": a create that ended in a transient error may or may
    // not have been applied (its answer lost, then the call gave up). Issued again with the same
    // intent, hence the same idempotency key, it resolves to the one assignment or makes it.
    let mut reconciled = Vec::new();
    for (intent, device_id, app_id) in retry_later {
        let key = format!("{intent}-create-assignment");
        reconciled.push((
            key.clone(),
            match client.create_assignment(&intent, &device_id, app_id).await {
                Ok(a) => Outcome::Created {
                    id: a.id,
                    key,
                    device_id,
                    app_id: app_id.to_owned(),
                    conflict: a.resolved_conflict,
                },
                Err(e) => failed(&e),
            },
        ));
    }
    (out, reconciled, walks_completed)
}

/// SplitMix64: the workload's seeded choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// 200 to 500 ms: short next to the breaker's cooldown, spread so workers do not come back as
    /// one herd.
    fn pause(&mut self) -> Duration {
        Duration::from_millis(200 + self.next() % 300)
    }
}

// ---------------------------------------------------------------------------------------------
// The runtime's events.

#[derive(Debug, Default)]
struct EventLog(Mutex<Events>);

#[derive(Debug, Default)]
struct Events {
    transitions: Vec<(Instant, BreakerState, BreakerState)>,
    /// Each transition's generation and the time the breaker itself gave it.
    stamps: Vec<(u32, Duration, BreakerState)>,
    gave_up: BTreeMap<String, usize>,
    retries: usize,
    retry_after_waits: usize,
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Events> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reset(&self) {
        *self.lock() = Events::default();
    }

    fn take(&self) -> Events {
        std::mem::take(&mut *self.lock())
    }
}

impl EventSink for EventLog {
    fn on_event(&self, event: &RuntimeEvent<'_>) {
        match *event {
            RuntimeEvent::BreakerTransition {
                breaker: "graph",
                from,
                to,
                generation,
                at,
            } => {
                let mut e = self.lock();
                // Stamped under the lock, so the stamps are in the order of the list.
                e.transitions.push((Instant::now(), from, to));
                e.stamps.push((generation, at, to));
            }
            RuntimeEvent::GaveUp { reason, .. } => {
                *self
                    .lock()
                    .gave_up
                    .entry(format!("{reason:?}"))
                    .or_insert(0) += 1;
            }
            RuntimeEvent::Retry { retry_after, .. } => {
                let mut e = self.lock();
                e.retries += 1;
                e.retry_after_waits += usize::from(retry_after);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks.

#[derive(Debug, Default)]
struct Check {
    ok: usize,
    by_kind: BTreeMap<(Kind, &'static str), usize>,
    errors: BTreeMap<String, usize>,
    lost: usize,
    duplicates: usize,
    early: usize,
    /// Creates the server applied while the caller was told of an error (a lost answer, then the
    /// call gave up): found again through the idempotency key when the create was reissued.
    applied_but_failed: usize,
    reconciled: usize,
    refused_on_reissue: usize,
    unreconciled: usize,
    conflicts_resolved: usize,
    api_requests: usize,
    token_requests: usize,
    unlogged: usize,
    open_violations: usize,
    in_flight_at_open: usize,
    late_probe_stamps: usize,
    opened: usize,
    closed_again: usize,
    probes: usize,
    max_probes_at_once: usize,
    probe_overruns: usize,
    short_cooldowns: usize,
    arrived_while_open: usize,
    deadline_overruns: usize,
    worst_deadline_ratio: f64,
    deadline_ended: usize,
}

fn check(p: &Phase) -> Check {
    let mut c = Check {
        lost: p.panicked,
        ..Check::default()
    };
    let rec = &p.records;

    // Every operation ended, each in success or a classified error; every success is backed by
    // the server.
    let creates_by_key: HashMap<&str, Vec<&graph_connector::server::CreateRecord>> =
        rec.creates.iter().fold(HashMap::new(), |mut m, cr| {
            m.entry(cr.idempotency_key.as_deref().unwrap_or("-"))
                .or_default()
                .push(cr);
            m
        });
    let mut walks: HashMap<(usize, usize), Vec<String>> = HashMap::new();
    for op in &p.ops {
        let label = match &op.outcome {
            Outcome::Failed { class, .. } => class.as_str(),
            _ => "ok",
        };
        *c.by_kind.entry((op.kind, label)).or_insert(0) += 1;
        match &op.outcome {
            Outcome::Page {
                walk,
                devices,
                last,
            } => {
                c.ok += 1;
                let seen = walks.entry(*walk).or_default();
                seen.extend(devices.iter().cloned());
                if *last {
                    let expected: Vec<String> = (0..DEVICES)
                        .map(|i| graph_connector::server::device(i).id)
                        .collect();
                    if *seen != expected {
                        c.lost += 1;
                    }
                }
            }
            Outcome::Created {
                id,
                key,
                device_id,
                app_id,
                conflict,
            } => {
                c.ok += 1;
                c.conflicts_resolved += usize::from(*conflict);
                let backed = creates_by_key.get(key.as_str()).is_some_and(|v| {
                    v.len() == 1
                        && v[0].id == *id
                        && v[0].device_id == *device_id
                        && v[0].app_id == *app_id
                });
                if !backed {
                    c.lost += 1;
                }
            }
            Outcome::Read { asked, got } => {
                c.ok += 1;
                if asked != got || !rec.creates.iter().any(|cr| cr.id == *asked) {
                    c.lost += 1;
                }
            }
            Outcome::Failed { class, code } => {
                if !ErrorClass::ALL.contains(class) {
                    c.lost += 1;
                }
                *c.errors.entry(format!("{class}/{code}")).or_insert(0) += 1;
            }
        }
        if op.took > op.deadline + DEADLINE_SLACK {
            c.deadline_overruns += 1;
        }
        c.worst_deadline_ratio = c
            .worst_deadline_ratio
            .max(op.took.as_secs_f64() / op.deadline.as_secs_f64());
    }
    c.deadline_ended = p.gave_up.get("Deadline").copied().unwrap_or(0);

    // Creates that failed transiently, issued again with the same key: each resolves to exactly
    // one assignment, the one applied before the caller heard of the failure or a new one.
    for (sent_key, o) in &p.reconciled {
        match o {
            Outcome::Created {
                id, key, conflict, ..
            } if creates_by_key
                .get(key.as_str())
                .is_some_and(|v| v.len() == 1 && v[0].id == *id) =>
            {
                c.reconciled += 1;
                c.applied_but_failed += usize::from(*conflict);
            }
            // Refused for good (a policy): nothing was, or is, applied under the key.
            Outcome::Failed { class, .. }
                if *class != ErrorClass::Transient
                    && !creates_by_key.contains_key(sent_key.as_str()) =>
            {
                c.refused_on_reissue += 1;
            }
            other => {
                eprintln!("not reconciled: {other:?}");
                c.unreconciled += 1;
            }
        }
    }

    // No duplicate: one assignment per device and app, one per idempotency key.
    c.duplicates = rec.duplicates().len() + creates_by_key.values().filter(|v| v.len() > 1).count();
    c.early = rec.early_requests().len();

    // Every request the server saw was logged by the client that sent it.
    let sent_by_id: HashMap<&str, &Sent> = p
        .sent
        .iter()
        .map(|s| (s.client_request_id.as_str(), s))
        .collect();
    for r in &rec.requests {
        if r.path.starts_with("/v1.0/") {
            c.api_requests += 1;
        } else {
            c.token_requests += 1;
        }
        if r.client_request_id
            .as_deref()
            .is_none_or(|id| !sent_by_id.contains_key(id))
        {
            c.unlogged += 1;
        }
    }

    breaker_checks(p, &mut c);
    c
}

/// The transitions in the order the breaker made them, each at the latest instant it can have
/// happened.
///
/// The sink stamps a transition after the breaker's compare-and-swap, on the thread that made it,
/// so two transitions close together can be stamped in the wrong order (a probe admitted by the
/// half-open breaker fails and reopens it before the thread that turned it half-open has stamped
/// that). The chain of states puts them back in order (each transition starts where the last
/// one ended), and a transition happened no later than any stamp of a transition after it.
fn chain(
    stamped: &[(Instant, BreakerState, BreakerState)],
) -> Vec<(Instant, BreakerState, BreakerState)> {
    let mut left: VecDeque<_> = stamped.iter().copied().collect();
    let mut state = BreakerState::Closed;
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let i = left
            .iter()
            .position(|&(_, from, _)| from == state)
            .unwrap_or_else(|| panic!("no transition from {state:?} in {left:?}"));
        let t = left.remove(i).expect("in range");
        state = t.2;
        out.push(t);
    }
    let mut latest: Option<Instant> = None;
    for t in out.iter_mut().rev() {
        if let Some(l) = latest {
            t.0 = t.0.min(l);
        }
        latest = Some(t.0);
    }
    out
}

/// A stretch of time in one breaker state.
#[derive(Debug)]
struct Interval {
    state: BreakerState,
    from: Instant,
    to: Option<Instant>,
    next: Option<BreakerState>,
}

fn breaker_checks(p: &Phase, c: &mut Check) {
    // The timeline: closed from the phase's start (a fresh registry), then each transition.
    let start = p
        .sent
        .first()
        .map_or_else(Instant::now, |s| s.sent)
        .min(p.transitions.first().map_or_else(Instant::now, |t| t.0));
    let mut timeline = vec![Interval {
        state: BreakerState::Closed,
        from: start,
        to: None,
        next: None,
    }];
    for (at, from, to) in chain(&p.transitions) {
        let last = timeline.last_mut().expect("non-empty");
        debug_assert_eq!(last.state, from);
        last.to = Some(at);
        last.next = Some(to);
        timeline.push(Interval {
            state: to,
            from: at,
            to: None,
            next: None,
        });
        if to == BreakerState::Open {
            c.opened += 1;
        }
        if from == BreakerState::HalfOpen && to == BreakerState::Closed {
            c.closed_again += 1;
        }
    }
    // Cooldowns by the breaker's own times and generations, which no scheduling can reorder: an
    // open epoch of generation g ends with the transition of generation g + 1.
    let mut stamps = p.stamps.clone();
    stamps.sort_by_key(|&(generation, ..)| generation);
    for pair in stamps.windows(2) {
        let ((g, opened, to), (next_g, ended, _)) = (pair[0], pair[1]);
        if to == BreakerState::Open && next_g == g + 1 && ended < opened + p.cooldown {
            c.short_cooldowns += 1;
        }
    }
    let find = |t: Instant| {
        timeline
            .partition_point(|iv| iv.from <= t)
            .saturating_sub(1)
    };

    // Attempts to the breaker's dependency: an attempt is one admission, and may send more than
    // one request (a create that meets 409 reads the existing assignment).
    let mut attempts: BTreeMap<(u64, u32), (Instant, Option<Instant>)> = BTreeMap::new();
    for s in &p.sent {
        if !OPERATIONS.contains(&s.operation) {
            continue;
        }
        let Some(cid) = s.correlation_id else {
            continue;
        };
        let e = attempts
            .entry((cid, s.attempt))
            .or_insert((s.sent, s.ended));
        e.0 = e.0.min(s.sent);
        e.1 = match (e.1, s.ended) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    // Probes of each half-open interval: (first send, end).
    let mut probes: BTreeMap<usize, Vec<(Instant, Instant)>> = BTreeMap::new();
    let far = Instant::now() + Duration::from_secs(3600);
    for &(sent, ended) in attempts.values() {
        let i = find(sent);
        let iv = &timeline[i];
        match iv.state {
            BreakerState::Closed => {}
            BreakerState::Open => {
                if sent.duration_since(iv.from) <= RACE {
                    // Admitted while closed, in the same step as its send, just as another
                    // call's failure opened the breaker.
                    c.in_flight_at_open += 1;
                } else if iv.next == Some(BreakerState::HalfOpen)
                    && iv.to.is_some_and(|to| to.duration_since(sent) <= RACE)
                {
                    // A probe admitted by the half-open breaker before the call that turned
                    // it half-open had stamped the transition.
                    c.late_probe_stamps += 1;
                    probes
                        .entry(i + 1)
                        .or_default()
                        .push((sent, ended.unwrap_or(far)));
                } else {
                    c.open_violations += 1;
                }
            }
            BreakerState::HalfOpen => {
                probes
                    .entry(i)
                    .or_default()
                    .push((sent, ended.unwrap_or(far)));
            }
        }
    }
    for list in probes.values() {
        c.probes += list.len();
        let mut edges: Vec<(Instant, i32)> =
            list.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
        // Ends before starts at the same instant.
        edges.sort();
        let (mut now, mut max) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            max = max.max(now);
        }
        let max = usize::try_from(max).unwrap_or(0);
        c.max_probes_at_once = c.max_probes_at_once.max(max);
        if max > p.probes_allowed as usize {
            c.probe_overruns += 1;
        }
    }

    // From the server's side: requests that arrived while the breaker was open. Each was sent
    // by an attempt admitted before it opened (checked above: every server request is in the
    // client's log by its client-request-id).
    for r in &p.records.requests {
        if r.path.starts_with("/v1.0/")
            && timeline[find(p.server_started + r.elapsed)].state == BreakerState::Open
        {
            c.arrived_while_open += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The figures.

#[derive(Debug, Default)]
struct Summary {
    ops: usize,
    ok: usize,
    lost: usize,
    duplicates: usize,
    early: usize,
    open_violations: usize,
    probe_overruns: usize,
    deadline_overruns: usize,
    unlogged: usize,
    faults: BTreeMap<FaultKind, usize>,
    checks: Vec<Check>,
}

impl Summary {
    fn of(phases: &[Phase]) -> Summary {
        let mut s = Summary::default();
        for p in phases {
            let c = check(p);
            s.ops += p.ops.len();
            s.ok += c.ok;
            s.lost += c.lost + c.unreconciled;
            s.duplicates += c.duplicates;
            s.early += c.early;
            s.open_violations += c.open_violations;
            s.probe_overruns += c.probe_overruns + c.short_cooldowns;
            s.deadline_overruns += c.deadline_overruns;
            s.unlogged += c.unlogged;
            for (k, n) in p.records.faults() {
                *s.faults.entry(k).or_insert(0) += n;
            }
            s.checks.push(c);
        }
        s
    }

    fn table(&self, phases: &[Phase], total: usize) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "fault-injection suite: {total} logical operations, seed {SEED}, fault rate {FAULT_RATE}, outage {:?}..{:?} of each phase",
            OUTAGE.start, OUTAGE.end
        );
        let _ = writeln!(
            t,
            "| concurrency | operations | ok | lost | /v1.0 requests | amplification | duplicates | early | breaker opened / closed | attempts sent while open | probes (max at once) | deadline overruns | worst call / deadline | seconds |"
        );
        let _ = writeln!(
            t,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for (p, c) in phases.iter().zip(&self.checks) {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {:.3} | {} | {} | {} / {} | {} | {} ({}) | {} | {:.2} | {:.1} |",
                p.concurrency,
                p.ops.len(),
                c.ok,
                c.lost,
                c.api_requests,
                c.api_requests as f64 / p.ops.len().max(1) as f64,
                c.duplicates,
                c.early,
                c.opened,
                c.closed_again,
                c.open_violations,
                c.probes,
                c.max_probes_at_once,
                c.deadline_overruns,
                c.worst_deadline_ratio,
                p.took.as_secs_f64(),
            );
        }
        let _ = writeln!(t, "\nfaults injected (requests): {:?}", self.faults);
        for (p, c) in phases.iter().zip(&self.checks) {
            let _ = writeln!(
                t,
                "\nconcurrency {}: outcomes {:?}\n  errors {:?}\n  gave up {:?}, retries {} ({} waited a Retry-After), walks completed {}\n  token requests {}, requests not in the client's log {}, 409s resolved {}\n  creates failed transiently and reissued with the same key {} ({} had been applied: resolved through 409), refused for good {}, not resolved {}\n  in flight when the breaker opened {} (requests arriving while open {}), probes stamped before their transition {}, calls ended by deadline {}",
                p.concurrency,
                c.by_kind,
                c.errors,
                p.gave_up,
                p.retries,
                p.retry_after_waits,
                p.walks_completed,
                c.token_requests,
                c.unlogged,
                c.conflicts_resolved,
                c.reconciled,
                c.applied_but_failed,
                c.refused_on_reissue,
                c.unreconciled,
                c.in_flight_at_open,
                c.arrived_while_open,
                c.late_probe_stamps,
                c.deadline_ended,
            );
        }
        t
    }
}
