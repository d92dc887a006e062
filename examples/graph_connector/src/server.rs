//! A Graph/Intune-style HTTP server with seeded fault injection, and the records tests assert on.
//!
//! [`GraphServer::start`] binds `127.0.0.1:0` and serves this contract:
//!
//! | request | answer |
//! |---|---|
//! | `POST /oauth2/token` (form `client_id=...`, optional) | `{"access_token", "token_type": "Bearer", "expires_in"}` |
//! | `GET /v1.0/devices?$top=N` | `{"value": [...], "@odata.nextLink": "<absolute url>"}`, no link on the last page |
//! | `POST /v1.0/assignments` `{"intent_id", "device_id", "app_id"}` + `Idempotency-Key` | `201 {"id", ...}` + `Location`; the same key again: `409 {"error": {"code": "Conflict"}}` + `Location` of the existing one |
//! | `GET /v1.0/assignments/{id}` | `200`, or `404` for [`ServerConfig::consistency_delay`] after creation |
//!
//! Every `/v1.0` request needs `Authorization: Bearer <token>`; an unknown or expired token gets
//! `401 {"error": {"code": "InvalidAuthenticationToken"}}`. A create for an app in
//! [`ServerConfig::policy_app_ids`], or for a device in [`ServerConfig::out_of_scope_devices`]
//! (out of scope of the tenant's policy whichever app is asked for), gets
//! `403 {"error": {"code": "Forbidden"}}`.
//!
//! # Faults
//!
//! Each `/v1.0` request draws a fault with probability [`ServerConfig::fault_rate`], from the
//! kinds in [`FaultKind`] weighted by [`ServerConfig::fault_weights`]. The draw is a hash of the
//! seed, the operation (client, method, path and query, idempotency key) and the attempt number of
//! that operation, so a run with the same seed meets the same faults whatever the interleaving of
//! concurrent calls. [`GraphServer::set_outage`] (or [`ServerConfig::outage`]) answers every
//! `/v1.0` request with 503 for a while, to open a client's breaker.
//!
//! # Records
//!
//! The server records every request (arrival time, method, path, idempotency key, token, the fault
//! injected, the `Retry-After` given, the status sent), every create applied and every token
//! issued. [`Records`] answers the questions a test asks: duplicates, requests sent before a
//! `Retry-After` had passed, token refreshes that were not needed.
//!
//! A `Retry-After` binds the operation it answered: the same client must not send the same
//! operation again before it has passed. That is what a per-call retry engine can honour.
//!
//! # Throttle windows
//!
//! Graph throttles an app (the OAuth client a token was issued to), not one operation: a `429`
//! opens a throttle window for the whole client until its `Retry-After` has passed. A request of
//! that client that arrives inside the window, later than [`THROTTLE_GRACE`] after the `429` was
//! sent (requests already on their way are not the client's fault), is a violation: it is
//! recorded in [`RequestRecord::throttle_violation`] and answered `429` with the time left.
//! ([`ServerConfig::throttle_grace`] changes the grace, for tests.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// The header that carries a create's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The optional header (Graph's) with which a client names each request it sends; recorded in
/// [`RequestRecord::client_request_id`] so a test can join the server's view with the client's.
pub const CLIENT_REQUEST_ID: &str = "client-request-id";

/// How long after a `429` was sent a request of the same client may still arrive without
/// violating the throttle window: it may have left before the `429` arrived.
pub const THROTTLE_GRACE: Duration = Duration::from_millis(50);

/// A fault the server can inject into a `/v1.0` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `429` with `Retry-After: <seconds>`.
    ThrottledSeconds,
    /// `429` with `Retry-After: <HTTP date>`.
    ThrottledDate,
    /// `503 Service Unavailable`.
    Unavailable,
    /// `500 Internal Server Error`.
    Internal,
    /// `504 Gateway Timeout`.
    GatewayTimeout,
    /// The answer comes after [`ServerConfig::slow_response`], later than the client's timeout.
    Slow,
    /// The connection is closed before the request is handled: nothing is applied.
    Reset,
    /// The request is applied (a create is created), then the connection is closed: the response
    /// is lost, and a retried create meets `409`.
    LostResponse,
    /// `503` because an outage window is open (not drawn at random).
    Outage,
}

impl FaultKind {
    /// The kinds drawn at random, in declaration order.
    pub const RANDOM: [FaultKind; 8] = [
        FaultKind::ThrottledSeconds,
        FaultKind::ThrottledDate,
        FaultKind::Unavailable,
        FaultKind::Internal,
        FaultKind::GatewayTimeout,
        FaultKind::Slow,
        FaultKind::Reset,
        FaultKind::LostResponse,
    ];

    /// The kind's name in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            FaultKind::ThrottledSeconds => "throttled_seconds",
            FaultKind::ThrottledDate => "throttled_date",
            FaultKind::Unavailable => "unavailable",
            FaultKind::Internal => "internal",
            FaultKind::GatewayTimeout => "gateway_timeout",
            FaultKind::Slow => "slow",
            FaultKind::Reset => "reset",
            FaultKind::LostResponse => "lost_response",
            FaultKind::Outage => "outage",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When tokens expire. Both limits may be set; the first reached wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry {
    /// A token is refused once it has been presented this many times.
    pub after_requests: Option<u64>,
    /// A token is refused this long after it was issued.
    pub after: Option<Duration>,
}

impl TokenExpiry {
    /// Tokens that last an hour, like Graph's.
    pub const fn new() -> Self {
        TokenExpiry {
            after_requests: None,
            after: Some(Duration::from_secs(3600)),
        }
    }

    /// Tokens refused after `n` requests (and after an hour).
    pub const fn after_requests(n: u64) -> Self {
        TokenExpiry {
            after_requests: Some(n),
            after: Some(Duration::from_secs(3600)),
        }
    }

    /// Tokens refused `d` after they were issued.
    pub const fn after(d: Duration) -> Self {
        TokenExpiry {
            after_requests: None,
            after: Some(d),
        }
    }
}

impl Default for TokenExpiry {
    fn default() -> Self {
        TokenExpiry::new()
    }
}

/// The server's behaviour: data, faults, tokens and timings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Number of devices listed.
    pub devices: usize,
    /// The largest page served, whatever `$top` asks for.
    pub max_page_size: usize,
    /// Probability that a `/v1.0` request meets a random fault, in `[0, 1]`.
    pub fault_rate: f64,
    /// Seed of the fault draws.
    pub seed: u64,
    /// Relative weight of each random fault kind; a kind absent or at 0 is never drawn.
    pub fault_weights: BTreeMap<FaultKind, u32>,
    /// At most this many random faults in a row for one operation; `None`: no cap.
    pub max_faults_per_operation: Option<u32>,
    /// Only requests of these methods (`"POST"`, ...) draw random faults; empty: every method.
    pub fault_methods: BTreeSet<String>,
    /// Apps whose assignment a policy forbids: creates get `403`.
    pub policy_app_ids: BTreeSet<String>,
    /// Devices out of scope of the tenant's assignment policy: a create for any app gets `403`.
    pub out_of_scope_devices: BTreeSet<String>,
    /// When tokens expire.
    pub token_expiry: TokenExpiry,
    /// The wait a `429` asks for (whole seconds are sent; an HTTP date is rounded up to the next
    /// second).
    pub retry_after: Duration,
    /// How late a [`FaultKind::Slow`] answer comes.
    pub slow_response: Duration,
    /// How long a new assignment answers `404` to reads.
    pub consistency_delay: Duration,
    /// A window, from the server's start, during which every `/v1.0` request gets `503`.
    pub outage: Option<Range<Duration>>,
    /// How long after a `429` a request of the same client may arrive without violating its
    /// throttle window ([`THROTTLE_GRACE`] by default).
    pub throttle_grace: Duration,
}

impl ServerConfig {
    /// 50 devices, pages of at most 100, no faults, hour-long tokens, `Retry-After: 1`, slow
    /// answers after 3 s, reads consistent 200 ms after a create.
    pub fn new() -> Self {
        ServerConfig {
            devices: 50,
            max_page_size: 100,
            fault_rate: 0.0,
            seed: 0,
            fault_weights: FaultKind::RANDOM.into_iter().map(|k| (k, 1)).collect(),
            max_faults_per_operation: None,
            fault_methods: BTreeSet::new(),
            policy_app_ids: BTreeSet::new(),
            out_of_scope_devices: BTreeSet::new(),
            token_expiry: TokenExpiry::new(),
            retry_after: Duration::from_secs(1),
            slow_response: Duration::from_secs(3),
            consistency_delay: Duration::from_millis(200),
            outage: None,
            throttle_grace: THROTTLE_GRACE,
        }
    }

    /// Sets the number of devices.
    pub fn with_devices(mut self, n: usize) -> Self {
        self.devices = n;
        self
    }

    /// Sets the largest page.
    pub fn with_max_page_size(mut self, n: usize) -> Self {
        self.max_page_size = n.max(1);
        self
    }

    /// Sets the fault rate (clamped to `[0, 1]`) and the seed.
    pub fn with_faults(mut self, rate: f64, seed: u64) -> Self {
        self.fault_rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.seed = seed;
        self
    }

    /// Sets one fault kind's weight.
    pub fn with_fault_weight(mut self, kind: FaultKind, weight: u32) -> Self {
        self.fault_weights.insert(kind, weight);
        self
    }

    /// Caps the random faults in a row for one operation.
    pub fn with_max_faults_per_operation(mut self, n: u32) -> Self {
        self.max_faults_per_operation = Some(n);
        self
    }

    /// Draws random faults for requests of `method` only (call again to add methods).
    pub fn with_faults_on_method(mut self, method: &str) -> Self {
        self.fault_methods.insert(method.to_ascii_uppercase());
        self
    }

    /// Forbids assignments of an app by policy.
    pub fn with_policy_app(mut self, app_id: impl Into<String>) -> Self {
        self.policy_app_ids.insert(app_id.into());
        self
    }

    /// Puts a device out of scope of the tenant's policy: no app may be assigned to it.
    pub fn with_out_of_scope_device(mut self, device_id: impl Into<String>) -> Self {
        self.out_of_scope_devices.insert(device_id.into());
        self
    }

    /// Sets when tokens expire.
    pub fn with_token_expiry(mut self, expiry: TokenExpiry) -> Self {
        self.token_expiry = expiry;
        self
    }

    /// Sets the wait a `429` asks for.
    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    /// Sets how late a slow answer comes.
    pub fn with_slow_response(mut self, d: Duration) -> Self {
        self.slow_response = d;
        self
    }

    /// Sets how long a new assignment stays invisible to reads.
    pub fn with_consistency_delay(mut self, d: Duration) -> Self {
        self.consistency_delay = d;
        self
    }

    /// Sets the grace of throttle windows (see [`THROTTLE_GRACE`]).
    pub fn with_throttle_grace(mut self, grace: Duration) -> Self {
        self.throttle_grace = grace;
        self
    }

    /// Sets an outage window, from the server's start.
    pub fn with_outage(mut self, window: Range<Duration>) -> Self {
        self.outage = Some(window);
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new()
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Order of arrival.
    pub seq: u64,
    /// Wall-clock arrival time.
    pub at: SystemTime,
    /// Arrival time since the server started.
    pub elapsed: Duration,
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// The client the token was issued to (`-` when there is no valid token).
    pub client_id: String,
    /// The bearer token presented.
    pub token: Option<String>,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `client-request-id` header ([`CLIENT_REQUEST_ID`]), if the client sent one.
    pub client_request_id: Option<String>,
    /// The operation this request is an attempt of (`client|METHOD path` or `client|key`).
    pub operation: String,
    /// 1 for the first request of the operation, 2 for the second, ...
    pub attempt: u32,
    /// The fault injected, if any.
    pub fault: Option<FaultKind>,
    /// The `Retry-After` header sent, and the instant it asked the client to wait for.
    pub retry_after: Option<(String, SystemTime)>,
    /// Set when this request came before a `Retry-After` given for its operation had passed: by
    /// how much it was early.
    pub early_by: Option<Duration>,
    /// Set when this request came inside its client's throttle window, later than
    /// [`THROTTLE_GRACE`] after the `429` that opened it: how long the window had left.
    pub throttle_violation: Option<Duration>,
    /// Why the request was refused, when the server (not a fault) refused it: `expired_token`,
    /// `unknown_token`, `policy`, `out_of_scope`, `throttle_window`, `conflict`,
    /// `not_yet_visible`, `not_found`, `bad_request`.
    pub note: Option<&'static str>,
    /// The status sent; `None` when the connection was closed or the client left first.
    pub status: Option<u16>,
}

/// A create the server applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateRecord {
    /// The assignment's id.
    pub id: String,
    /// The idempotency key of the request that created it.
    pub idempotency_key: Option<String>,
    /// The intent.
    pub intent_id: String,
    /// The device.
    pub device_id: String,
    /// The app.
    pub app_id: String,
    /// Since the server started.
    pub elapsed: Duration,
}

/// A token the server issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIssue {
    /// Since the server started.
    pub elapsed: Duration,
    /// The client it was issued to.
    pub client_id: String,
    /// The token.
    pub token: String,
    /// The client's previous token, if it had one.
    pub previous: Option<String>,
    /// Whether that previous token had expired when this one was issued.
    pub previous_expired: bool,
    /// How old that previous token was when this one was issued.
    pub previous_age: Option<Duration>,
    /// The lifetime tokens had ([`TokenExpiry::after`]), if they expire with time.
    pub lifetime: Option<Duration>,
}

impl TokenIssue {
    /// A refresh while the client's latest token was good for more than half its life yet: not
    /// one made ahead of expiry, but one per concurrent caller, say.
    pub fn is_needless(&self) -> bool {
        self.previous.is_some()
            && !self.previous_expired
            && match (self.previous_age, self.lifetime) {
                (Some(age), Some(life)) => age < life / 2,
                _ => true,
            }
    }
}

/// A snapshot of everything the server recorded.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Every request, in order of arrival.
    pub requests: Vec<RequestRecord>,
    /// Every create applied.
    pub creates: Vec<CreateRecord>,
    /// Every token issued.
    pub token_issues: Vec<TokenIssue>,
    /// Tokens that expired and were then presented (each got a `401`).
    pub expired_tokens: BTreeSet<String>,
}

/// More than one assignment created for the same device and app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The device.
    pub device_id: String,
    /// The app.
    pub app_id: String,
    /// The assignments created.
    pub ids: Vec<String>,
}

impl Records {
    /// Device and app pairs with more than one assignment created.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut by_pair: BTreeMap<(&str, &str), Vec<String>> = BTreeMap::new();
        for c in &self.creates {
            by_pair
                .entry((&c.device_id, &c.app_id))
                .or_default()
                .push(c.id.clone());
        }
        by_pair
            .into_iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|((d, a), ids)| Duplicate {
                device_id: d.to_owned(),
                app_id: a.to_owned(),
                ids,
            })
            .collect()
    }

    /// Requests that came before a `Retry-After` given for their operation had passed.
    pub fn early_requests(&self) -> Vec<&RequestRecord> {
        self.requests
            .iter()
            .filter(|r| r.early_by.is_some())
            .collect()
    }

    /// Requests that came inside their client's throttle window, past the grace.
    pub fn throttle_violations(&self) -> Vec<&RequestRecord> {
        self.requests
            .iter()
            .filter(|r| r.throttle_violation.is_some())
            .collect()
    }

    /// Token issues made while the client's latest token was good for more than half its life
    /// yet (see [`TokenIssue::is_needless`]).
    pub fn needless_token_issues(&self) -> Vec<&TokenIssue> {
        self.token_issues
            .iter()
            .filter(|t| t.is_needless())
            .collect()
    }

    /// Token issues that replaced an earlier token (the first token of a client is not one).
    pub fn refreshes(&self) -> usize {
        self.token_issues
            .iter()
            .filter(|t| t.previous.is_some())
            .count()
    }

    /// Number of requests that met each fault.
    pub fn faults(&self) -> BTreeMap<FaultKind, usize> {
        let mut m = BTreeMap::new();
        for r in &self.requests {
            if let Some(f) = r.fault {
                *m.entry(f).or_insert(0) += 1;
            }
        }
        m
    }

    /// Number of `Retry-After` headers sent.
    pub fn retry_afters_given(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.retry_after.is_some())
            .count()
    }

    /// The assignment created for a device and app, if one was.
    pub fn created_for(&self, device_id: &str, app_id: &str) -> Option<&CreateRecord> {
        self.creates
            .iter()
            .find(|c| c.device_id == device_id && c.app_id == app_id)
    }

    /// The requests of one operation (see [`RequestRecord::operation`]), in order.
    pub fn attempts_of<'a>(
        &'a self,
        operation: &'a str,
    ) -> impl Iterator<Item = &'a RequestRecord> {
        self.requests
            .iter()
            .filter(move |r| r.operation == operation)
    }
}

/// A device as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The device id (`dev-0001`).
    pub id: String,
    /// A display name.
    pub device_name: String,
    /// The operating system.
    pub operating_system: String,
}

/// The body of a create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentRequest {
    /// The deployment intent.
    pub intent_id: String,
    /// The device.
    pub device_id: String,
    /// The app.
    pub app_id: String,
}

#[derive(Debug, Clone)]
struct Assignment {
    id: String,
    req: AssignmentRequest,
    created: Instant,
}

#[derive(Debug)]
struct TokenState {
    client_id: String,
    issued: Instant,
    uses: u64,
}

#[derive(Debug, Default)]
struct Inner {
    records: Records,
    seq: u64,
    tokens: HashMap<String, TokenState>,
    latest_token: HashMap<String, String>,
    token_count: u64,
    attempts: HashMap<String, u32>,
    faults_in_a_row: HashMap<String, u32>,
    not_before: HashMap<String, SystemTime>,
    /// Per client: when the `429` that opened its throttle window was sent, and when it ends.
    throttle_windows: HashMap<String, (SystemTime, SystemTime)>,
    by_key: HashMap<String, String>,
    assignments: HashMap<String, Assignment>,
    next_assignment: u64,
}

#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    base_url: String,
    started: Instant,
    outage: AtomicBool,
    /// `true` while [`GraphServer::hold_tokens`] holds the token endpoint's answers back.
    token_hold: watch::Sender<bool>,
    /// Bumped whenever a request is recorded or its status is set, for
    /// [`GraphServer::wait_until`].
    changed: watch::Sender<u64>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent records: every update is one push or
        // one insert, so a poisoned lock is still good to read.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the waiters of [`GraphServer::wait_until`] that the records changed.
    fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn token_expired(&self, t: &TokenState, now: Instant) -> bool {
        let e = self.config.token_expiry;
        e.after_requests.is_some_and(|n| t.uses >= n)
            || e.after.is_some_and(|d| now.duration_since(t.issued) >= d)
    }

    fn in_outage(&self, elapsed: Duration) -> bool {
        self.outage.load(Ordering::Relaxed)
            || self
                .config
                .outage
                .as_ref()
                .is_some_and(|w| w.contains(&elapsed))
    }

    /// Draws the fault for attempt `n` of `operation`.
    fn draw(&self, operation: &str, n: u32) -> Option<FaultKind> {
        let c = &self.config;
        if c.fault_rate <= 0.0 {
            return None;
        }
        let key = fnv1a(operation.as_bytes());
        if unit(c.seed, key, n, 1) >= c.fault_rate {
            return None;
        }
        let total: u64 = c.fault_weights.values().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let mut pick = (unit(c.seed, key, n, 2) * total as f64) as u64;
        for (&kind, &w) in &c.fault_weights {
            if pick < u64::from(w) {
                return Some(kind);
            }
            pick -= u64::from(w);
        }
        c.fault_weights.keys().next_back().copied()
    }
}

/// A running server. Dropping it stops it.
#[derive(Debug)]
pub struct GraphServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl GraphServer {
    /// Binds `127.0.0.1:0` and serves in the background on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn start(config: ServerConfig) -> std::io::Result<GraphServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            base_url: format!("http://{addr}"),
            started: Instant::now(),
            outage: AtomicBool::new(false),
            token_hold: watch::Sender::new(false),
            changed: watch::Sender::new(0),
            inner: Mutex::new(Inner::default()),
        });
        let router = router(shared.clone());
        let (shutdown, rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, router, rx));
        Ok(GraphServer {
            addr,
            shared,
            shutdown,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// When the server started: [`RequestRecord::elapsed`] counts from here.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// The configuration served.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Opens (`true`) or closes an outage: every `/v1.0` request gets `503` meanwhile.
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::Relaxed);
    }

    /// Holds back (`true`) or releases the answers of `POST /oauth2/token`: while held, a token
    /// request is recorded on arrival and answered once released. A test uses it to make a
    /// refresh wait until every call it races has met the expired token.
    pub fn hold_tokens(&self, on: bool) {
        self.shared.token_hold.send_replace(on);
    }

    /// A snapshot of the records.
    pub fn records(&self) -> Records {
        self.shared.lock().records.clone()
    }

    /// Waits until `done` holds of the records. It is checked now and again each time a request
    /// is recorded or answered, so nothing polls and nothing waits on the clock.
    pub async fn wait_until(&self, mut done: impl FnMut(&Records) -> bool) {
        let mut changed = self.shared.changed.subscribe();
        loop {
            if done(&self.shared.lock().records) {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for GraphServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Lets a handler close its own connection without answering.
#[derive(Debug, Clone)]
struct ConnKill(Arc<Notify>);

async fn accept_loop(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let kill = Arc::new(Notify::new());
        let service = {
            let kill = ConnKill(kill.clone());
            let router = router.clone();
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(kill.clone());
                let router = router.clone();
                async move {
                    let resp = tower_call(router, req.map(Body::new)).await;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            })
        };
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

async fn tower_call(router: Router, req: Request) -> Response {
    use tower_service::Service;
    let mut router = router;
    match router.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/v1.0/devices", get(list_devices))
        .route("/v1.0/assignments", post(create_assignment))
        .route("/v1.0/assignments/{id}", get(get_assignment))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// Filled by [`gate`] for the endpoint handlers.
#[derive(Debug, Clone)]
struct Ctx {
    record: usize,
    client_id: String,
}

fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let t = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))?;
    Some(t.trim().to_owned())
}

/// Records the request, then applies the outage, authentication and the fault draw before the
/// endpoint runs.
async fn gate(State(shared): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    let at = SystemTime::now();
    let now = Instant::now();
    let elapsed = now.duration_since(shared.started);
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let token = bearer(req.headers());
    let key = req
        .headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client_request_id = req
        .headers()
        .get(CLIENT_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let kill = req.extensions().get::<ConnKill>().cloned();
    let is_api = req.uri().path().starts_with("/v1.0/");

    // Admission, under the lock: who is calling, which attempt of which operation, is it early,
    // and what the server does with it.
    enum Verdict {
        Refuse(Response),
        Fault(FaultKind),
        Pass,
    }
    let (idx, verdict, client_id) = {
        let mut g = shared.lock();
        let inner = &mut *g;
        let mut note = None;
        let mut client_id = "-".to_owned();
        let mut auth_ok = !is_api;
        if is_api {
            match token.as_deref().and_then(|t| inner.tokens.get_mut(t)) {
                None => note = Some("unknown_token"),
                Some(state) => {
                    client_id = state.client_id.clone();
                    if shared.token_expired(state, now) {
                        note = Some("expired_token");
                    } else {
                        state.uses += 1;
                        auth_ok = true;
                    }
                }
            }
            if note == Some("expired_token")
                && let Some(t) = &token
            {
                inner.records.expired_tokens.insert(t.clone());
            }
        }
        let operation = match &key {
            Some(k) => format!("{client_id}|{method} key={k}"),
            None => format!("{client_id}|{method} {path}"),
        };
        let attempt = {
            let n = inner.attempts.entry(operation.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let early_by = inner
            .not_before
            .get(&operation)
            .and_then(|nb| nb.duration_since(at).ok())
            .filter(|d| !d.is_zero());
        let throttle_violation = inner
            .throttle_windows
            .get(&client_id)
            .filter(|(sent, _)| at >= *sent + shared.config.throttle_grace)
            .and_then(|(_, until)| until.duration_since(at).ok())
            .filter(|d| !d.is_zero() && auth_ok && is_api);
        if throttle_violation.is_some() {
            note = Some("throttle_window");
        }

        let verdict = if !is_api {
            Verdict::Pass
        } else if shared.in_outage(elapsed) {
            Verdict::Fault(FaultKind::Outage)
        } else if !auth_ok {
            Verdict::Refuse(error_body(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ))
        } else if let Some(left) = throttle_violation {
            let mut resp = error_body(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "The application is throttled; retry after the time given.",
            );
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(left).max(1)),
            );
            Verdict::Refuse(resp)
        } else {
            let in_a_row = inner.faults_in_a_row.get(&operation).copied().unwrap_or(0);
            let capped = shared
                .config
                .max_faults_per_operation
                .is_some_and(|m| in_a_row >= m)
                || (!shared.config.fault_methods.is_empty()
                    && !shared.config.fault_methods.contains(method.as_str()));
            match shared.draw(&operation, attempt).filter(|_| !capped) {
                Some(f) => {
                    inner
                        .faults_in_a_row
                        .insert(operation.clone(), in_a_row + 1);
                    Verdict::Fault(f)
                }
                None => {
                    inner.faults_in_a_row.remove(&operation);
                    Verdict::Pass
                }
            }
        };
        let fault = match verdict {
            Verdict::Fault(f) => Some(f),
            _ => None,
        };
        inner.seq += 1;
        let idx = inner.records.requests.len();
        inner.records.requests.push(RequestRecord {
            seq: inner.seq,
            at,
            elapsed,
            method,
            path,
            client_id: client_id.clone(),
            token,
            idempotency_key: key,
            client_request_id,
            operation,
            attempt,
            fault,
            retry_after: None,
            early_by,
            throttle_violation,
            note,
            status: None,
        });
        (idx, verdict, client_id)
    };
    shared.touch();

    let set_status = |resp: &Response| {
        {
            let mut g = shared.lock();
            if let Some(r) = g.records.requests.get_mut(idx) {
                r.status = Some(resp.status().as_u16());
            }
        }
        shared.touch();
    };

    let resp = match verdict {
        Verdict::Refuse(resp) => resp,
        Verdict::Pass => {
            req.extensions_mut().insert(Ctx {
                record: idx,
                client_id,
            });
            next.run(req).await
        }
        Verdict::Fault(kind) => match kind {
            FaultKind::ThrottledSeconds | FaultKind::ThrottledDate => {
                let sent = SystemTime::now();
                let (value, not_before) = if kind == FaultKind::ThrottledSeconds {
                    let secs = ceil_secs(shared.config.retry_after).max(1);
                    (secs.to_string(), sent + Duration::from_secs(secs))
                } else {
                    let target = round_up_to_second(sent + shared.config.retry_after);
                    (httpdate::fmt_http_date(target), target)
                };
                {
                    let mut g = shared.lock();
                    let op = g.records.requests.get(idx).map(|r| r.operation.clone());
                    if let Some(op) = op {
                        g.not_before.insert(op, not_before);
                    }
                    // The whole client is throttled until the hint passes; a window still open
                    // is extended, never shortened.
                    let w = g
                        .throttle_windows
                        .entry(client_id.clone())
                        .or_insert((sent, not_before));
                    if w.1 <= sent {
                        *w = (sent, not_before);
                    } else {
                        w.1 = w.1.max(not_before);
                    }
                    if let Some(r) = g.records.requests.get_mut(idx) {
                        r.retry_after = Some((value.clone(), not_before));
                    }
                }
                let mut resp = error_body(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequests",
                    "Too many requests; retry after the time given.",
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
            FaultKind::Unavailable | FaultKind::Outage => error_body(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            ),
            FaultKind::Internal => error_body(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "An internal server error occurred.",
            ),
            FaultKind::GatewayTimeout => error_body(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "The gateway timed out.",
            ),
            FaultKind::Slow => {
                tokio::time::sleep(shared.config.slow_response).await;
                req.extensions_mut().insert(Ctx {
                    record: idx,
                    client_id,
                });
                next.run(req).await
            }
            FaultKind::Reset => return close_connection(kill).await,
            FaultKind::LostResponse => {
                req.extensions_mut().insert(Ctx {
                    record: idx,
                    client_id,
                });
                let _applied = next.run(req).await;
                return close_connection(kill).await;
            }
        },
    };
    set_status(&resp);
    resp
}

/// Closes the connection this request came on, without an answer.
async fn close_connection(kill: Option<ConnKill>) -> Response {
    match kill {
        Some(ConnKill(k)) => {
            k.notify_one();
            // The connection task drops this future with the connection.
            std::future::pending::<Response>().await
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn note(shared: &Shared, ctx: &Ctx, note: &'static str) {
    let mut g = shared.lock();
    if let Some(r) = g.records.requests.get_mut(ctx.record) {
        r.note = Some(note);
    }
}

async fn token(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let client_id = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "client_id")
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    // Never fails: `shared` owns the sender.
    let _ = shared.token_hold.subscribe().wait_for(|held| !held).await;
    let now = Instant::now();
    let mut g = shared.lock();
    let inner = &mut *g;
    inner.token_count += 1;
    let token = format!("tok-{}-{:04}", client_id, inner.token_count);
    let previous = inner.latest_token.get(&client_id).cloned();
    let previous_state = previous.as_deref().and_then(|p| inner.tokens.get(p));
    let previous_expired = previous_state.is_none_or(|t| shared.token_expired(t, now));
    let previous_age = previous_state.map(|t| now.duration_since(t.issued));
    inner.tokens.insert(
        token.clone(),
        TokenState {
            client_id: client_id.clone(),
            issued: now,
            uses: 0,
        },
    );
    inner.latest_token.insert(client_id.clone(), token.clone());
    inner.records.token_issues.push(TokenIssue {
        elapsed: now.duration_since(shared.started),
        client_id,
        token: token.clone(),
        previous,
        previous_expired,
        previous_age,
        lifetime: shared.config.token_expiry.after,
    });
    let expires_in = shared
        .config
        .token_expiry
        .after
        .map_or(3600, |d| d.as_secs().max(1));
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
    .into_response()
}

async fn list_devices(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let top = match q.get("$top").map(|s| s.parse::<usize>()) {
        None => shared.config.max_page_size,
        Some(Ok(n)) if n > 0 => n.min(shared.config.max_page_size),
        Some(_) => {
            note(&shared, &ctx, "bad_request");
            return error_body(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "$top must be a positive integer.",
            );
        }
    };
    let skip = match q.get("$skiptoken").map(|s| s.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            note(&shared, &ctx, "bad_request");
            return error_body(StatusCode::BAD_REQUEST, "BadRequest", "Invalid $skiptoken.");
        }
    };
    let total = shared.config.devices;
    let end = skip.saturating_add(top).min(total);
    let value: Vec<Device> = (skip.min(total)..end).map(device).collect();
    let mut body = json!({ "value": value });
    if end < total {
        body["@odata.nextLink"] = json!(format!(
            "{}/v1.0/devices?$top={top}&$skiptoken={end}",
            shared.base_url
        ));
    }
    axum::Json(body).into_response()
}

/// The `i`th device (0-based): `dev-0001`, ...
pub fn device(i: usize) -> Device {
    const OS: [&str; 4] = ["Windows", "iOS", "Android", "macOS"];
    Device {
        id: format!("dev-{:04}", i + 1),
        device_name: format!("DESKTOP-{:04}", i + 1),
        operating_system: OS[i % OS.len()].to_owned(),
    }
}

fn assignment_json(a: &Assignment) -> serde_json::Value {
    json!({
        "id": a.id,
        "intent_id": a.req.intent_id,
        "device_id": a.req.device_id,
        "app_id": a.req.app_id,
        "status": "created",
    })
}

async fn create_assignment(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(req) = serde_json::from_slice::<AssignmentRequest>(&body) else {
        note(&shared, &ctx, "bad_request");
        return error_body(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Expected {\"intent_id\", \"device_id\", \"app_id\"}.",
        );
    };
    if shared.config.out_of_scope_devices.contains(&req.device_id) {
        note(&shared, &ctx, "out_of_scope");
        return error_body(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "Device {} is out of scope of the tenant's assignment policy.",
                req.device_id
            ),
        );
    }
    if shared.config.policy_app_ids.contains(&req.app_id) {
        note(&shared, &ctx, "policy");
        return error_body(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "Assignment of app {} is not allowed by tenant policy.",
                req.app_id
            ),
        );
    }
    let key = headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{}|{k}", ctx.client_id));
    let now = Instant::now();
    let mut g = shared.lock();
    let inner = &mut *g;
    if let Some(existing) = key.as_ref().and_then(|k| inner.by_key.get(k)) {
        let location = format!("{}/v1.0/assignments/{existing}", shared.base_url);
        if let Some(r) = inner.records.requests.get_mut(ctx.record) {
            r.note = Some("conflict");
        }
        let mut resp = error_body(
            StatusCode::CONFLICT,
            "Conflict",
            "An assignment with this idempotency key exists.",
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    inner.next_assignment += 1;
    let id = format!("asg-{:06}", inner.next_assignment);
    let a = Assignment {
        id: id.clone(),
        req: req.clone(),
        created: now,
    };
    if let Some(k) = key {
        inner.by_key.insert(k, id.clone());
    }
    inner.records.creates.push(CreateRecord {
        id: id.clone(),
        idempotency_key: headers
            .get(IDEMPOTENCY_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        intent_id: req.intent_id,
        device_id: req.device_id,
        app_id: req.app_id,
        elapsed: now.duration_since(shared.started),
    });
    let body = assignment_json(&a);
    inner.assignments.insert(id.clone(), a);
    drop(g);
    let location = format!("{}/v1.0/assignments/{id}", shared.base_url);
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn get_assignment(
    State(shared): State<Arc<Shared>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(id): Path<String>,
) -> Response {
    let found = shared.lock().assignments.get(&id).cloned();
    match found {
        Some(a) if a.created.elapsed() >= shared.config.consistency_delay => {
            axum::Json(assignment_json(&a)).into_response()
        }
        Some(_) => {
            note(&shared, &ctx, "not_yet_visible");
            error_body(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The assignment does not exist (yet).",
            )
        }
        None => {
            note(&shared, &ctx, "not_found");
            error_body(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                "The assignment does not exist.",
            )
        }
    }
}

async fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "NotFound", "No such endpoint.")
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn round_up_to_second(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(ceil_secs(since))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in `[0, 1)` from the seed, an operation, its attempt number and a salt.
fn unit(seed: u64, key: u64, attempt: u32, salt: u64) -> f64 {
    let h = splitmix(seed ^ splitmix(key ^ splitmix(u64::from(attempt) | (salt << 32))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}
