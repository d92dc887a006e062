//! The connector: Graph/Intune calls, each written as ONE attempt and made resilient by
//! `#[resilient(...)]`; errors classified by `#[derive(ConnectorError)]`.
//!
//! What the annotations buy, with no retry loop in this file:
//!
//! - 5xx, timeouts and dropped connections are retried with backoff;
//! - a `429` is `throttled`: the call waits for its `Retry-After` (seconds or HTTP date), and the
//!   hint pauses the `graph_client` rate limiter that every call of the client goes through, so no
//!   sibling call is sent before it has passed either (Graph throttles the app, not the
//!   operation);
//! - a create carries `Idempotency-Key: {intent_id}-create-assignment`, the same on every attempt
//!   and in the end-of-run replay, so a retried create whose first answer was lost meets `409` and
//!   resolves to the existing assignment through `Location`: no duplicate;
//! - tokens are refreshed ahead of their expiry (from `expires_in`) and again on any `401`, in
//!   both cases single-flight (`resilience_runtime::refresh::SingleFlight`): many calls that need a
//!   new token cause one request; a `401` refreshes and retries without spending a retry;
//! - a `403` is a policy violation: never retried, reported as such;
//! - a read just after a create may meet `404` while the write propagates: within
//!   [`GraphClient::consistency_window`] of the create it is retried on a schedule of its own and
//!   from a retry budget of its own (`graph-consistency`), neither a permanent error nor a draw on
//!   the `graph` budget that protects the service against overload;
//! - every call goes through the `graph` breaker, which stops calling while it is open; the batch
//!   ([`run`]) pauses while it is, instead of failing its queue;
//! - every call has a `deadline`, retries and waits included;
//! - every request carries a `client-request-id` (as Graph's SDKs send), which the server records.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::{StatusCode, header};
use resilience_runtime::breaker::{Breaker, BreakerState};
use resilience_runtime::events::{self, EventSink, RuntimeEvent};
use resilience_runtime::refresh::SingleFlight;
use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::{
    CallContext, Classify, ConnectorError, ErrorClass, Registry, Rejected, resilient,
};
use serde::Deserialize;

use crate::report::{
    BackendView, BreakerPauses, DeviceOutcome, OperationRow, Report, RunResult, ServerView,
    Transition, Waits,
};
use crate::server::{AssignmentRequest, CLIENT_REQUEST_ID, Device, Records};

/// The app assigned to most devices.
pub const APP: &str = "app-company-portal";
/// The app every tenth device asks for; the embedded server's policy forbids it.
pub const BLOCKED_APP: &str = "app-unapproved-vpn";

/// The `deadline` of [`GraphClient::list_page`] and [`GraphClient::create_assignment`], as their
/// annotations declare it (for tests that time the calls).
pub const CALL_DEADLINE: Duration = Duration::from_secs(16);
/// The `deadline` of [`GraphClient::read_assignment`], as its annotation declares it.
pub const READ_DEADLINE: Duration = Duration::from_secs(15);
/// The `deadline` of [`GraphClient::read_after_create`], as its annotation declares it.
pub const READ_AFTER_CREATE_DEADLINE: Duration = Duration::from_secs(60);

/// The breaker every call goes through.
pub const BREAKER: &str = "graph";
/// The rate limiter every call of a client goes through; a `429`'s hint pauses it whole.
pub const RATE_LIMIT: &str = "graph_client";
/// The retry budget of reads that wait for a create to become visible.
pub const CONSISTENCY_BUDGET: &str = "graph-consistency";

/// The breakers, budgets and limits of the example, as a deployment would ship them: short
/// cooldowns so a demo run sees its breaker close again.
pub const RESILIENCE_TOML: &str = include_str!("../resilience.toml");

/// Everything a Graph call can fail with, and what each failure means for the next attempt.
#[derive(Debug, thiserror::Error, ConnectorError)]
pub enum GraphError {
    /// `429`: the server throttles the client (the app), and says for how long.
    #[error("throttled by the server")]
    #[connector(throttled, code = "429")]
    Throttled {
        /// From the `Retry-After` header, in either form.
        #[connector(retry_after)]
        retry_after: Option<Duration>,
    },
    /// `401`: the token expired or was revoked.
    #[error("access token refused")]
    #[connector(auth, code = "401")]
    Unauthorized,
    /// `403`: a tenant policy forbids the operation.
    #[error("forbidden by policy: {0}")]
    #[connector(policy, code = "403")]
    Forbidden(String),
    /// `404`: the resource does not exist.
    #[error("not found: {0}")]
    #[connector(permanent, code = "404")]
    NotFound(String),
    /// `404` for an assignment created moments ago: the write has not propagated to the replica
    /// that answered (eventual consistency). Retried; no sign of ill health for the breaker.
    #[error("not visible yet: {0}")]
    #[connector(transient, breaker = "ignored", code = "404")]
    NotYetVisible(String),
    /// No token could be had from the token endpoint.
    #[error(transparent)]
    #[connector(delegate)]
    Token(TokenError),
    /// Any other status: the class comes from the status table (5xx transient, 4xx permanent).
    #[error("http {status}: {code}")]
    #[connector(status = status)]
    Http {
        /// The HTTP status.
        status: u16,
        /// Graph's `error.code`.
        code: String,
    },
    /// The connection failed or closed before an answer came.
    #[error("network error")]
    #[connector(transient, code = "network")]
    Network(#[source] reqwest::Error),
    /// The answer could not be understood.
    #[error("unexpected answer: {0}")]
    #[connector(permanent, code = "decode")]
    Decode(String),
    /// The runtime stopped the call: open circuit, attempt timeout, retry budget.
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

/// Why the token endpoint gave no token, as every call that waited on the refresh sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get an access token: {message}")]
pub struct TokenError {
    class: ErrorClass,
    code: Option<String>,
    message: String,
}

impl TokenError {
    fn of(e: &GraphError) -> TokenError {
        TokenError {
            class: e.class(),
            code: e.code().map(str::to_owned),
            message: error_chain(e),
        }
    }
}

impl Classify for TokenError {
    fn class(&self) -> ErrorClass {
        // A token endpoint that refuses the client's credentials is not cured by asking again
        // at once: the call ends with the refresh's error.
        self.class
    }
    fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl GraphError {
    fn network(e: reqwest::Error) -> GraphError {
        if e.is_decode() {
            GraphError::Decode(e.to_string())
        } else if e.is_builder() {
            GraphError::Decode(format!("bad request: {e}"))
        } else {
            // A URL's query may carry a credential: it never reaches a log through this error.
            GraphError::Network(resilience_runtime::http::without_query(e))
        }
    }
}

/// Parses a `Retry-After` header: delta-seconds (fractions accepted) or an HTTP date, which
/// becomes the time left until then (zero if it has passed).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use graph_connector::connector::parse_retry_after;
///
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after("0.5", now), Some(Duration::from_millis(500)));
/// let date = httpdate::fmt_http_date(now + Duration::from_secs(3));
/// assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(3)));
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = v.parse().ok()?;
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A page of devices.
#[derive(Debug, Clone, Deserialize)]
pub struct Page {
    /// The devices on this page.
    pub value: Vec<Device>,
    /// The next page, absent on the last.
    #[serde(rename = "@odata.nextLink")]
    pub next_link: Option<String>,
}

/// An app assignment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Assignment {
    /// The assignment's id.
    pub id: String,
    /// The device.
    pub device_id: String,
    /// The app.
    pub app_id: String,
    /// Set when a create met `409` (its earlier attempt had been applied) and was resolved through
    /// the `Location` of the existing assignment.
    #[serde(skip)]
    pub resolved_conflict: bool,
    /// When the client saw the create succeed (`None` when it was resolved through a `409`).
    #[serde(skip)]
    pub created: Option<Instant>,
}

#[derive(Debug, Deserialize)]
struct GraphErrorBody {
    error: GraphErrorDetail,
}

#[derive(Debug, Deserialize)]
struct GraphErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds the token lasts; absent: an hour.
    #[serde(default)]
    expires_in: Option<u64>,
}

/// One request a [`GraphClient`] sent, as its [`SendLog`] saw it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The `client-request-id` it carried; the server records it.
    pub client_request_id: String,
    /// The resilient operation whose attempt sent it (`-` outside one).
    pub operation: &'static str,
    /// The call's correlation id: one per logical call.
    pub correlation_id: Option<u64>,
    /// The attempt of that call (0 for the first).
    pub attempt: u32,
    /// Just before it was sent: after the runtime admitted the attempt.
    pub sent: Instant,
    /// When the attempt's body let go of it (answered, failed, or cut by a timeout); `None` while
    /// it runs.
    pub ended: Option<Instant>,
}

/// The requests a client sent, in order, for tests that check the client's timing against the
/// server's records (joined by `client-request-id`).
#[derive(Debug, Default)]
pub struct SendLog {
    entries: Mutex<Vec<Sent>>,
}

impl SendLog {
    /// An empty log.
    pub fn new() -> Self {
        SendLog::default()
    }

    fn push(&self, sent: Sent) -> usize {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.push(sent);
        e.len() - 1
    }

    /// A copy of the entries.
    pub fn snapshot(&self) -> Vec<Sent> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Stamps a logged request's end when the attempt drops it.
#[derive(Debug)]
struct SentGuard(Option<(Arc<SendLog>, usize)>);

impl Drop for SentGuard {
    fn drop(&mut self) {
        if let Some((log, i)) = &self.0 {
            let now = Instant::now();
            let mut e = log.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = e.get_mut(*i) {
                s.ended = Some(now);
            }
        }
    }
}

/// A bearer token, and when the client should stop using it.
#[derive(Debug, Clone)]
struct Token {
    value: Arc<str>,
    /// When the client replaces it: its expiry as `expires_in` announced it (counted from when
    /// the answer came, so a little late), less a margin, so that a request is never sent with a
    /// token about to expire.
    refresh_at: tokio::time::Instant,
}

/// A token request in flight, owned by the task that runs it.
type TokenFetch = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Token, TokenError>> + Send + 'static>,
>;

/// How long before a token's announced expiry the client replaces it: a quarter of its life, at
/// most a minute.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 4).min(Duration::from_secs(60))
}

/// What every request of a client shares: the connection pool, where to send, who is asking,
/// the request numbering and the optional log. Owned by an `Arc`, so that a token refresh can
/// run in a task of its own.
#[derive(Debug)]
struct Wire {
    http: reqwest::Client,
    base_url: String,
    client_id: String,
    /// Numbers the requests sent, for their `client-request-id`.
    requests: AtomicU64,
    /// Where sent requests are logged, if a test asked for it.
    send_log: Option<Arc<SendLog>>,
}

impl Wire {
    /// Names a request with a fresh `client-request-id` (as Graph's SDKs do) and logs it when a
    /// [`SendLog`] is set. Keep the guard until the attempt ends: dropping it stamps the end.
    fn stamp(&self, req: reqwest::RequestBuilder) -> (reqwest::RequestBuilder, SentGuard) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}-{n:08}", self.client_id);
        let guard = SentGuard(self.send_log.as_ref().map(|log| {
            let ctx = CallContext::current();
            let index = log.push(Sent {
                client_request_id: id.clone(),
                operation: ctx.as_ref().map_or("-", CallContext::operation),
                correlation_id: ctx.as_ref().map(|c| c.correlation_id().as_u64()),
                attempt: ctx.as_ref().map_or(0, CallContext::attempt),
                sent: Instant::now(),
                ended: None,
            });
            (log.clone(), index)
        }));
        (req.header(CLIENT_REQUEST_ID, id), guard)
    }

    /// `POST /oauth2/token` (client credentials).
    #[resilient(
        connector = "graph",
        retries = 3,
        backoff(base = "100ms", max = "1s"),
        idempotent,
        timeout = "2s"
    )]
    async fn fetch_token(&self) -> Result<TokenResponse, GraphError> {
        let (req, _sent) = self.stamp(
            self.http
                .post(format!("{}/oauth2/token", self.base_url))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!(
                    "grant_type=client_credentials&client_id={}&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default",
                    self.client_id
                )),
        );
        let resp = req.send().await.map_err(GraphError::network)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(GraphError::Http {
                status: status.as_u16(),
                code: status.canonical_reason().unwrap_or("Unknown").to_owned(),
            });
        }
        resp.json().await.map_err(GraphError::network)
    }
}

/// Records that a create's outcome is unknown (a request that may have been applied got no
/// answer that says so) unless the attempt learns otherwise and disarms it.
struct Uncertain<'a> {
    set: &'a Mutex<HashSet<String>>,
    key: &'a str,
    armed: bool,
}

impl Uncertain<'_> {
    fn settle(&mut self) {
        self.armed = false;
    }

    fn known_applied(&mut self) {
        self.armed = false;
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.key);
    }
}

impl Drop for Uncertain<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.set
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.key.to_owned());
        }
    }
}

/// A Graph client: one OAuth client (its `client_id`), its token, and its throttle state.
///
/// Graph throttles per app: every call of one client goes through the [`RATE_LIMIT`] limiter of
/// the registry it runs in, which a `429`'s hint pauses. Run one client per registry (as [`run`]
/// does) so that the limiter is this client's.
#[derive(Debug)]
pub struct GraphClient {
    wire: Arc<Wire>,
    /// The token in use and its generation: read by every attempt, replaced by one refresh at a
    /// time however many calls ask.
    token: SingleFlight<Token, TokenError>,
    /// The newest token generation the server refused.
    refused: AtomicU64,
    /// Tokens fetched to replace one (ahead of its expiry or after a `401`).
    refreshes: Arc<AtomicU64>,
    /// Until when the server throttles this client (the latest `429` hint), for requests an
    /// attempt sends after the limiter admitted it (a second request in one attempt, a request
    /// held up by a token refresh).
    throttled_until: Mutex<Option<tokio::time::Instant>>,
    /// One replica of a fleet (see [`GraphClient::in_fleet`]).
    in_fleet: bool,
    /// Idempotency keys of creates that may have been applied without the client knowing.
    uncertain: Mutex<HashSet<String>>,
    consistency_window: Duration,
}

impl GraphClient {
    /// A client for the server at `base_url` (`http://127.0.0.1:PORT`), identified as `client_id`
    /// when it asks for tokens.
    ///
    /// # Errors
    ///
    /// When the HTTP client cannot be built.
    pub fn new(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> Result<Self, GraphError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(GraphError::network)?;
        Ok(GraphClient {
            wire: Arc::new(Wire {
                http,
                base_url: base_url.into().trim_end_matches('/').to_owned(),
                client_id: client_id.into(),
                requests: AtomicU64::new(0),
                send_log: None,
            }),
            token: SingleFlight::new(),
            refused: AtomicU64::new(0),
            refreshes: Arc::new(AtomicU64::new(0)),
            throttled_until: Mutex::new(None),
            in_fleet: false,
            uncertain: Mutex::new(HashSet::new()),
            consistency_window: Duration::from_secs(30),
        })
    }

    /// Logs every request this client sends into `log` (see [`SendLog`]).
    ///
    /// # Panics
    ///
    /// When called after the client has been shared (it is meant for building).
    #[must_use]
    pub fn with_send_log(mut self, log: Arc<SendLog>) -> Self {
        Arc::get_mut(&mut self.wire)
            .expect("with_send_log is called while building the client")
            .send_log = Some(log);
        self
    }

    /// Makes this client one replica of a fleet whose `graph_client` rate limit is shared: an
    /// attempt admitted while this replica's own throttle window is open is not held back and
    /// then sent when the window ends (another replica's later `429` may have extended the
    /// client's window meanwhile, which only the shared limiter knows); it fails at once as
    /// throttled for the time left, and its retry draws a new permit from the shared limiter.
    #[must_use]
    pub fn in_fleet(mut self) -> Self {
        self.in_fleet = true;
        self
    }

    /// Sets how long after a create a `404` on reading it is taken for replication lag
    /// ([`GraphError::NotYetVisible`], retried) rather than absence ([`GraphError::NotFound`]).
    /// Default: 30 s.
    #[must_use]
    pub fn with_consistency_window(mut self, window: Duration) -> Self {
        self.consistency_window = window;
        self
    }

    /// See [`GraphClient::with_consistency_window`].
    pub fn consistency_window(&self) -> Duration {
        self.consistency_window
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.wire.base_url
    }

    /// The OAuth client this client asks tokens for.
    pub fn client_id(&self) -> &str {
        &self.wire.client_id
    }

    /// Tokens fetched to replace an earlier one, ahead of its expiry or after a `401`.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Whether a create with this idempotency key may have been applied without the client
    /// knowing (its answer was lost, or cut by a timeout, and no later answer said).
    pub fn outcome_unknown(&self, idempotency_key: &str) -> bool {
        self.uncertain
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(idempotency_key)
    }

    /// The refresh: called by [`SingleFlight`] only when a refresh starts, in the caller's poll
    /// (so the caller's registry is in force); the future it returns owns what it needs, so it
    /// runs to its end in a task of its own even if every caller waiting on it is cancelled.
    fn fetcher(&self) -> impl FnOnce() -> TokenFetch + '_ {
        move || {
            let wire = self.wire.clone();
            let refreshes = self.refreshes.clone();
            let replacing = self.token.generation() > 0;
            let registry = Registry::current();
            Box::pin(async move {
                let r = registry.scope(wire.fetch_token()).await;
                let t = r.map_err(|e| TokenError::of(&e))?;
                let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600).max(1));
                if replacing {
                    refreshes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("access token refreshed");
                }
                Ok(Token {
                    value: t.access_token.into(),
                    refresh_at: tokio::time::Instant::now() + lifetime - refresh_margin(lifetime),
                })
            })
        }
    }

    /// The token to send, and its generation: the current one while it is good for a while yet,
    /// else a new one (single-flight).
    async fn bearer(&self) -> Result<(Arc<str>, u64), GraphError> {
        let now = tokio::time::Instant::now();
        let t = self
            .token
            .get_or_refresh(|t| now < t.refresh_at, self.fetcher())
            .await
            .map_err(GraphError::Token)?;
        Ok((t.value.value, t.generation))
    }

    /// Replaces a refused token, once per refusal however many calls ask.
    ///
    /// This is the `refresh` hook of every call: the engine runs it when an attempt fails with an
    /// `auth` error, then tries again. Calls that met the same refused token share one refresh;
    /// a call whose token has already been replaced returns at once.
    ///
    /// # Errors
    ///
    /// When no token can be had.
    pub async fn refresh_token(&self) -> Result<(), GraphError> {
        let refused = self.refused.load(Ordering::Acquire);
        self.token
            .refresh(refused, self.fetcher())
            .await
            .map(|_| ())
            .map_err(GraphError::Token)
    }

    /// Waits while the server throttles this client. The `graph_client` limiter holds back new
    /// attempts; this holds back a request an attempt sends after it was admitted. In a fleet
    /// ([`GraphClient::in_fleet`]) the attempt fails instead, as throttled for the time left.
    async fn hold_while_throttled(&self) -> Result<(), GraphError> {
        if self.in_fleet {
            let until = *self
                .throttled_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            return match until {
                Some(u) if u > now => Err(GraphError::Throttled {
                    retry_after: Some(u - now),
                }),
                _ => Ok(()),
            };
        }
        loop {
            let until = *self
                .throttled_until
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match until {
                Some(u) if u > tokio::time::Instant::now() => tokio::time::sleep_until(u).await,
                _ => return Ok(()),
            }
        }
    }

    /// Turns a non-success answer into its error.
    async fn check(
        &self,
        resp: reqwest::Response,
        generation: u64,
    ) -> Result<reqwest::Response, GraphError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            if let Some(wait) = retry_after {
                let until = tokio::time::Instant::now() + wait;
                let mut t = self
                    .throttled_until
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                *t = Some(t.map_or(until, |u| u.max(until)));
            }
            return Err(GraphError::Throttled { retry_after });
        }
        if status == StatusCode::UNAUTHORIZED {
            // The `refresh` hook replaces this generation once, however many calls met it.
            self.refused.fetch_max(generation, Ordering::AcqRel);
            return Err(GraphError::Unauthorized);
        }
        let url = resp.url().path().to_owned();
        let body = resp
            .json::<GraphErrorBody>()
            .await
            .map(|b| b.error)
            .unwrap_or(GraphErrorDetail {
                code: status.canonical_reason().unwrap_or("Unknown").to_owned(),
                message: String::new(),
            });
        Err(match status {
            StatusCode::FORBIDDEN => GraphError::Forbidden(body.message),
            StatusCode::NOT_FOUND => GraphError::NotFound(url),
            _ => GraphError::Http {
                status: status.as_u16(),
                code: body.code,
            },
        })
    }

    /// One authenticated `GET`, after any throttle window has passed.
    async fn get(&self, url: &str) -> Result<reqwest::Response, GraphError> {
        self.hold_while_throttled().await?;
        let (token, generation) = self.bearer().await?;
        let (req, _sent) = self
            .wire
            .stamp(self.wire.http.get(url).bearer_auth(&*token));
        let resp = req.send().await.map_err(GraphError::network)?;
        self.check(resp, generation).await
    }

    /// `GET` one page of devices (`url` is the first page's or a `nextLink`).
    #[resilient(
        connector = "graph",
        retries = 5,
        backoff(base = "100ms", max = "2s"),
        breaker = "graph",
        rate_limit = "graph_client",
        idempotent,
        timeout = "2s",
        deadline = "16s",
        refresh = Self::refresh_token
    )]
    pub async fn list_page(&self, url: &str) -> Result<Page, GraphError> {
        let resp = self.get(url).await?;
        resp.json().await.map_err(GraphError::network)
    }

    /// Every device, following `@odata.nextLink` to the last page.
    ///
    /// # Errors
    ///
    /// The first page that fails for good.
    pub async fn list_devices(&self, page_size: usize) -> Result<Vec<Device>, GraphError> {
        let mut url = Some(format!(
            "{}/v1.0/devices?$top={page_size}",
            self.wire.base_url
        ));
        let mut devices = Vec::new();
        while let Some(u) = url {
            let page = self.list_page(&u).await?;
            devices.extend(page.value);
            url = page.next_link;
        }
        Ok(devices)
    }

    /// `POST /v1.0/assignments`, once per intent.
    ///
    /// The idempotency key is the same on every attempt of a call, and in any later call for the
    /// same intent. When an earlier attempt was applied but its answer lost, this attempt meets
    /// `409` and resolves to the existing assignment through `Location`. When the call fails and
    /// an attempt may have been applied unseen, [`GraphClient::outcome_unknown`] says so.
    #[resilient(
        connector = "graph",
        retries = 5,
        backoff(base = "100ms", max = "2s"),
        breaker = "graph",
        rate_limit = "graph_client",
        idempotency_key = format!("{}-create-assignment", intent_id),
        timeout = "2s",
        deadline = "16s",
        refresh = Self::refresh_token
    )]
    pub async fn create_assignment(
        &self,
        intent_id: &str,
        device_id: &str,
        app_id: &str,
    ) -> Result<Assignment, GraphError> {
        let key = CallContext::current()
            .and_then(|c| c.idempotency_key().map(str::to_owned))
            .ok_or_else(|| GraphError::Decode("no idempotency key in the call context".into()))?;
        self.hold_while_throttled().await?;
        let (token, generation) = self.bearer().await?;
        let (req, _sent) = self.wire.stamp(
            self.wire
                .http
                .post(format!("{}/v1.0/assignments", self.wire.base_url))
                .bearer_auth(&*token)
                .header("Idempotency-Key", &key)
                .json(&AssignmentRequest {
                    intent_id: intent_id.to_owned(),
                    device_id: device_id.to_owned(),
                    app_id: app_id.to_owned(),
                }),
        );
        // From here until an answer says otherwise, the create may have been applied.
        let mut uncertain = Uncertain {
            set: &self.uncertain,
            key: &key,
            armed: true,
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                if e.is_connect() {
                    // Never reached the server.
                    uncertain.settle();
                }
                return Err(GraphError::network(e));
            }
        };
        let status = resp.status();
        let created = Instant::now();
        if status == StatusCode::CONFLICT {
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| GraphError::Decode("409 without a Location".into()))?;
            let a = self.existing(&location, device_id, app_id).await?;
            uncertain.known_applied();
            return Ok(a);
        }
        // A refusal (4xx, or 503: not processed) applied nothing. 500, 502 and 504 say nothing
        // about whether the create was applied.
        if status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE {
            uncertain.settle();
        }
        let resp = self.check(resp, generation).await?;
        let mut a: Assignment = resp.json().await.map_err(GraphError::network)?;
        a.created = Some(created);
        uncertain.known_applied();
        Ok(a)
    }

    /// The assignment a `409` points at. It may not be readable yet (eventual consistency): its
    /// id is in the `Location` either way.
    async fn existing(
        &self,
        location: &str,
        device_id: &str,
        app_id: &str,
    ) -> Result<Assignment, GraphError> {
        let mut a = match self.get(location).await {
            Ok(resp) => resp
                .json::<Assignment>()
                .await
                .map_err(GraphError::network)?,
            Err(GraphError::NotFound(_)) => Assignment {
                id: location.rsplit('/').next().unwrap_or_default().to_owned(),
                device_id: device_id.to_owned(),
                app_id: app_id.to_owned(),
                resolved_conflict: true,
                created: None,
            },
            Err(e) => return Err(e),
        };
        a.resolved_conflict = true;
        Ok(a)
    }

    /// `GET /v1.0/assignments/{id}`: a `404` means there is no such assignment.
    #[resilient(
        connector = "graph",
        retries = 5,
        backoff(base = "100ms", max = "1s"),
        breaker = "graph",
        rate_limit = "graph_client",
        idempotent,
        timeout = "2s",
        deadline = "15s",
        refresh = Self::refresh_token
    )]
    pub async fn read_assignment(&self, id: &str) -> Result<Assignment, GraphError> {
        let resp = self
            .get(&format!("{}/v1.0/assignments/{id}", self.wire.base_url))
            .await?;
        resp.json().await.map_err(GraphError::network)
    }

    /// Reads an assignment back after creating it. A new assignment is `404` for a while
    /// (eventual consistency, seed 000): within [`GraphClient::consistency_window`] of `since`
    /// (when the create was seen) that `404` is
    /// [`GraphError::NotYetVisible`], retried on this site's own schedule and from its own budget
    /// ([`CONSISTENCY_BUDGET`]), never counted against the breaker.
    #[resilient(
        retries = 12,
        backoff(base = "100ms", max = "1s"),
        breaker = "graph",
        budget = "graph-consistency",
        rate_limit = "graph_client",
        idempotent,
        timeout = "2s",
        deadline = "60s",
        refresh = Self::refresh_token
    )]
    pub async fn read_after_create(
        &self,
        id: &str,
        since: Instant,
    ) -> Result<Assignment, GraphError> {
        let url = format!("{}/v1.0/assignments/{id}", self.wire.base_url);
        match self.get(&url).await {
            Ok(resp) => resp.json().await.map_err(GraphError::network),
            Err(GraphError::NotFound(path)) if since.elapsed() < self.consistency_window => {
                Err(GraphError::NotYetVisible(path))
            }
            Err(e) => Err(e),
        }
    }
}

/// The registry the example runs in: its own, configured from [`RESILIENCE_TOML`], so nothing
/// leaks into or out of the process-wide one.
///
/// # Panics
///
/// If the embedded configuration is invalid (a test checks it is not).
pub fn registry() -> Registry {
    let config = RegistryConfig::from_toml_str(RESILIENCE_TOML)
        .unwrap_or_else(|e| panic!("resilience.toml: {e}"));
    let r = Registry::new();
    r.apply(&config);
    r
}

/// The backend a fleet's replicas share their state on (`[backends.fleet]`).
pub const FLEET_BACKEND: &str = "fleet";

/// A replica's configuration: `base` (a `resilience.toml`, [`RESILIENCE_TOML`] by default) with
/// a `[backends.fleet]` on the Redis server at `redis_url` added, and the [`BREAKER`] breaker,
/// its budget and the [`RATE_LIMIT`] rate limit put on it, so every replica shares them. Keys go
/// under `key_prefix` (one per fleet run, so that runs do not inherit each other's state).
/// Settings the base already gives the backend win.
///
/// # Errors
///
/// The base is not valid TOML, sets no `[rate_limits.graph_client]`, or the result is not a
/// valid configuration (a bad URL, say): the loader's message.
///
/// ```
/// use graph_connector::connector::{RESILIENCE_TOML, fleet_config};
/// let cfg = fleet_config(RESILIENCE_TOML, "redis://127.0.0.1:6379", "graph-connector:1:").unwrap();
/// assert!(cfg.breaker_names().any(|n| n == "graph"));
/// assert!(fleet_config(RESILIENCE_TOML, "http://nope", "p:").is_err());
/// let err = fleet_config("", "redis://127.0.0.1:6379", "p:").unwrap_err();
/// assert!(err.contains("rate_limits.graph_client"), "{err}");
/// ```
pub fn fleet_config(
    base: &str,
    redis_url: &str,
    key_prefix: &str,
) -> Result<RegistryConfig, String> {
    use toml::{Table, Value};
    let mut t: Table = base.parse().map_err(|e| format!("{e}"))?;
    fn table<'a>(t: &'a mut Table, key: &str) -> Result<&'a mut Table, String> {
        t.entry(key)
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{key}` must be a table"))
    }
    let backend = table(table(&mut t, "backends")?, FLEET_BACKEND)?;
    for (k, v) in [
        ("kind", "redis"),
        ("url", redis_url),
        ("key_prefix", key_prefix),
        // Loose enough for a loaded machine running every replica: a round trip over it puts
        // the replica in fallback (local limits), which is what a fleet must not meet by chance.
        ("round_trip_limit", "100ms"),
        // An opening, a spent budget, reach the other replicas within this.
        ("sync_interval", "100ms"),
    ] {
        backend
            .entry(k)
            .or_insert_with(|| Value::String(v.to_owned()));
    }
    if !t
        .get("rate_limits")
        .and_then(Value::as_table)
        .is_some_and(|l| l.contains_key(RATE_LIMIT))
    {
        return Err(format!(
            "a fleet shares `rate_limits.{RATE_LIMIT}`, which the configuration must set (`rate`, `per`)"
        ));
    }
    for (section, name) in [
        ("breakers", BREAKER),
        ("budgets", BREAKER),
        ("rate_limits", RATE_LIMIT),
    ] {
        let instance = table(table(&mut t, section)?, name)?;
        instance.insert("backend".into(), Value::String(FLEET_BACKEND.into()));
    }
    RegistryConfig::from_toml_str(&t.to_string()).map_err(|e| e.to_string())
}

/// The app a device is assigned: every tenth asks for [`BLOCKED_APP`].
pub fn app_for(index: usize) -> &'static str {
    if index % 10 == 9 { BLOCKED_APP } else { APP }
}

/// The deployment intent of a device's assignment; the idempotency key derives from it.
pub fn intent_for(device_id: &str, app_id: &str) -> String {
    format!("intent-{device_id}-{app_id}")
}

/// The idempotency key every create for an intent carries.
pub fn idempotency_key_for(intent_id: &str) -> String {
    format!("{intent_id}-create-assignment")
}

/// The replica, of `replicas`, that handles a device: the device id's FNV-1a hash, mod
/// `replicas`. Stable across processes, builds and platforms, so every replica of a fleet agrees
/// on who handles what without talking to the others.
///
/// ```
/// use graph_connector::connector::shard_of;
/// assert_eq!(shard_of("dev-0001", 1), 0);
/// assert_eq!(shard_of("dev-0001", 4), shard_of("dev-0001", 4));
/// assert!(shard_of("dev-0002", 4) < 4);
/// ```
pub fn shard_of(device_id: &str, replicas: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % replicas.max(1) as u64) as usize
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Devices processed at once.
    pub concurrency: usize,
    /// Page size asked for when listing.
    pub page_size: usize,
    /// Handle at most this many of the listed devices (the first ones); `None`: all of them.
    pub limit: Option<usize>,
    /// How long the batch waits, in all, for an open breaker to admit a probe before it stops
    /// waiting and reports the devices left as failed.
    pub breaker_patience: Duration,
    /// Show progress on stderr (when it is a terminal).
    pub progress: bool,
    /// One replica of a fleet: `Some((index, replicas))` handles only the devices (of the first
    /// `limit` listed) whose id [`shard_of`] gives `index`; `None`: every device.
    pub shard: Option<(usize, usize)>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 8,
            page_size: 20,
            limit: None,
            breaker_patience: Duration::from_secs(60),
            progress: false,
            shard: None,
        }
    }
}

/// Collects the runtime's events during a run.
#[derive(Debug)]
struct Observer {
    started: Instant,
    retries: AtomicU64,
    inner: Mutex<ObserverState>,
}

#[derive(Debug, Default)]
struct ObserverState {
    waits: Waits,
    gave_up: BTreeMap<String, u64>,
    transitions: Vec<Transition>,
}

impl EventSink for Observer {
    fn on_event(&self, event: &RuntimeEvent<'_>) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match *event {
            RuntimeEvent::Retry {
                wait, retry_after, ..
            } => {
                self.retries.fetch_add(1, Ordering::Relaxed);
                s.waits.total += 1;
                s.waits.seconds += wait.as_secs_f64();
                if retry_after {
                    s.waits.retry_after += 1;
                    s.waits.retry_after_seconds += wait.as_secs_f64();
                }
            }
            RuntimeEvent::GaveUp { reason, .. } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{reason:?}"));
                *s.gave_up.entry(reason).or_insert(0) += 1;
            }
            RuntimeEvent::BreakerTransition {
                breaker, from, to, ..
            } => {
                s.transitions.push(Transition {
                    at_seconds: self.started.elapsed().as_secs_f64(),
                    breaker: breaker.to_owned(),
                    from: from.as_str().to_owned(),
                    to: to.as_str().to_owned(),
                });
            }
            _ => {}
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// One device to handle.
#[derive(Debug, Clone)]
struct Job {
    index: usize,
    device: Device,
}

/// How handling a device ended, before the end-of-run pass.
#[derive(Debug)]
enum Handled {
    /// For good: assigned, refused by policy, or failed for a reason another try cannot cure.
    Done(DeviceOutcome),
    /// Failed transiently, or with an unknown outcome: tried again at the end of the run, with
    /// the same idempotency key.
    Again(DeviceOutcome),
    /// Refused by an open breaker before anything was sent: back in the queue, after the time
    /// the breaker asked for.
    CircuitOpen(DeviceOutcome, Duration),
}

fn outcome_of(
    client: &GraphClient,
    device_id: &str,
    key: &str,
    stage: &str,
    e: &GraphError,
) -> Handled {
    let class = e.class();
    let message = error_chain(e);
    let code = e.code().map(str::to_owned);
    if class == ErrorClass::PolicyViolation {
        return Handled::Done(DeviceOutcome::PolicyViolation {
            device_id: device_id.to_owned(),
            stage: stage.to_owned(),
            code,
            message,
        });
    }
    if stage == "create" && client.outcome_unknown(key) {
        return Handled::Again(DeviceOutcome::Unknown {
            device_id: device_id.to_owned(),
            idempotency_key: key.to_owned(),
            message,
        });
    }
    let outcome = DeviceOutcome::Failed {
        device_id: device_id.to_owned(),
        stage: stage.to_owned(),
        class: class.as_str().to_owned(),
        code,
        message,
    };
    if let GraphError::Rejected(Rejected::CircuitOpen { retry_in, .. }) = e {
        Handled::CircuitOpen(outcome, *retry_in)
    } else if class.is_retryable() || matches!(e, GraphError::Rejected(_)) {
        Handled::Again(outcome)
    } else {
        Handled::Done(outcome)
    }
}

/// Creates one device's assignment (or finds the one an earlier try created, through the same
/// idempotency key) and reads it back.
async fn handle(client: &GraphClient, job: &Job) -> Handled {
    let app = app_for(job.index);
    let intent = intent_for(&job.device.id, app);
    let key = idempotency_key_for(&intent);
    let created = match client.create_assignment(&intent, &job.device.id, app).await {
        Ok(a) => a,
        Err(e) => return outcome_of(client, &job.device.id, &key, "create", &e),
    };
    let since = created.created.unwrap_or_else(Instant::now);
    match client.read_after_create(&created.id, since).await {
        Ok(read) => Handled::Done(DeviceOutcome::Assigned {
            device_id: job.device.id.clone(),
            assignment_id: read.id,
            resolved_conflict: created.resolved_conflict,
        }),
        Err(e) => outcome_of(client, &job.device.id, &key, "read", &e),
    }
}

/// Holds the batch while the breaker is open, for at most the run's patience in all.
#[derive(Debug)]
struct BreakerGate {
    breaker: Arc<Breaker>,
    patience: Duration,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    /// Time waited so far, by the whole batch (overlapping waits of workers counted once).
    waited: Duration,
    /// Until when the batch waits now, if it does.
    until: Option<tokio::time::Instant>,
    pauses: u64,
}

impl BreakerGate {
    /// Whether the batch may still wait for the breaker.
    fn patient(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).waited < self.patience
    }

    /// Waits until the breaker would admit a probe (its cooldown has passed) if it is open.
    /// Returns at once when it is not, or when the batch's patience is spent.
    ///
    /// An open breaker past its cooldown that still refused (on a fleet's backend the probe
    /// slot is being fetched, or another replica holds it) is waited on for `refused_for`, the
    /// time it asked for, once; with `refused_for` zero, not at all.
    async fn wait(&self, refused_for: Duration) {
        loop {
            if self.breaker.state() != BreakerState::Open {
                return;
            }
            let left = self
                .breaker
                .config()
                .cooldown
                .saturating_sub(self.breaker.time_in_state());
            let (left, once) = if left.is_zero() {
                (refused_for, true)
            } else {
                (left, false)
            };
            if left.is_zero() {
                return;
            }
            let until = {
                let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
                let now = tokio::time::Instant::now();
                match s.until {
                    // Another worker already waits for this cooldown: wait with it.
                    Some(u) if u > now => u,
                    _ => {
                        if s.waited >= self.patience {
                            return;
                        }
                        let wait = left.min(self.patience - s.waited);
                        s.waited += wait;
                        s.pauses += 1;
                        s.until = Some(now + wait);
                        now + wait
                    }
                }
            };
            tracing::info!(
                wait_ms = until
                    .saturating_duration_since(tokio::time::Instant::now())
                    .as_millis() as u64,
                "the graph breaker is open: the batch waits for it to admit a probe"
            );
            tokio::time::sleep_until(until).await;
            if once {
                return;
            }
        }
    }

    fn pauses(&self) -> BreakerPauses {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        BreakerPauses {
            pauses: s.pauses,
            seconds: s.waited.as_secs_f64(),
        }
    }
}

/// Lists every device, handles the first `limit` of them (all by default: create, then read
/// back, at most `concurrency` at once), tries the ones that failed transiently again at the end
/// with the same idempotency keys, and reports. Every call runs in `registry`.
pub async fn run(client: Arc<GraphClient>, registry: &Registry, opts: &RunOptions) -> Report {
    let started = Instant::now();
    let observer = Arc::new(Observer {
        started,
        retries: AtomicU64::new(0),
        inner: Mutex::new(ObserverState::default()),
    });
    let sink: Arc<dyn EventSink> = observer.clone();
    events::add_sink(sink.clone());
    let gate = Arc::new(BreakerGate {
        breaker: registry.breaker(BREAKER),
        patience: opts.breaker_patience,
        state: Mutex::new(GateState::default()),
    });

    let mut report = Report {
        base_url: client.base_url().to_owned(),
        concurrency: opts.concurrency.max(1),
        limit: opts.limit,
        ..Report::default()
    };
    match registry
        .scope(client.list_devices(opts.page_size.max(1)))
        .await
    {
        Ok(mut devices) => {
            report.listed = devices.len();
            if let Some(n) = opts.limit {
                devices.truncate(n);
            }
            // Each device keeps its index in the listing: the app it is assigned depends on it.
            let mut devices: Vec<(usize, Device)> = devices.into_iter().enumerate().collect();
            if let Some((index, replicas)) = opts.shard {
                devices.retain(|(_, d)| shard_of(&d.id, replicas) == index);
            }
            report.devices = devices.len();
            let (outcomes, again) =
                assign_all(&client, registry, devices, opts, &observer, &gate).await;
            report.device_outcomes = outcomes;
            report.retried_at_end = again;
            report.completed = true;
        }
        Err(e) => {
            report.run_error = Some(format!(
                "listing devices failed ({}): {}",
                e.class(),
                error_chain(&e)
            ));
        }
    }
    events::remove_sink(&sink);

    report.duration_seconds = started.elapsed().as_secs_f64();
    for d in &report.device_outcomes {
        *report
            .devices_by_outcome
            .entry(d.outcome().to_owned())
            .or_insert(0) += 1;
        if let DeviceOutcome::Failed { class, .. } = d {
            *report.failures_by_class.entry(class.clone()).or_insert(0) += 1;
        }
    }
    let metrics = registry.metrics();
    for op in [
        "list_page",
        "create_assignment",
        "read_after_create",
        "read_assignment",
        "fetch_token",
    ] {
        if let Some(site) = metrics.site(op) {
            let m = &site.metrics;
            report.operations.push(OperationRow {
                operation: op.to_owned(),
                calls: m.calls(),
                ok: m.ok,
                errors: ErrorClass::ALL
                    .into_iter()
                    .map(|c| (c.as_str().to_owned(), m.errors.get(c)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                rejected: m.rejected,
                retries: m.retries,
                retry_successes: m.retry_successes,
                refreshes: m.refreshes,
            });
        }
    }
    let s = observer.inner.lock().unwrap_or_else(|p| p.into_inner());
    report.retries = observer.retries.load(Ordering::Relaxed);
    report.waits = s.waits.clone();
    report.breaker_transitions = s.transitions.clone();
    report.gave_up = s.gave_up.clone();
    report.breaker_pauses = gate.pauses();
    report.token_refreshes = client.refreshes();
    report.backends = registry
        .health()
        .backends
        .into_iter()
        .map(|b| BackendView {
            replica: opts.shard.map(|(i, _)| i),
            name: b.name,
            state: b.state.as_str().to_owned(),
            errors_total: b.backend_errors_total,
            fallbacks_total: b.fallbacks_total,
        })
        .collect();
    report.result = RunResult::of(&report);
    report
}

/// Handles every device, then tries again, once, those that failed transiently or whose create's
/// outcome is unknown. Returns every device's outcome, in the listing's order, and how many
/// were tried again.
async fn assign_all(
    client: &Arc<GraphClient>,
    registry: &Registry,
    devices: Vec<(usize, Device)>,
    opts: &RunOptions,
    observer: &Arc<Observer>,
    gate: &Arc<BreakerGate>,
) -> (Vec<DeviceOutcome>, usize) {
    let total = devices.len();
    let progress = Arc::new(Progress::default());
    let ticker = (opts.progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(progress.clone().show(total, observer.clone())));

    // Each job with its position in `outcomes`, which follow the jobs' order.
    let jobs: Vec<(usize, Job)> = devices
        .into_iter()
        .map(|(index, device)| Job { index, device })
        .enumerate()
        .collect();
    let jobs_only: Vec<Job> = jobs.iter().map(|(_, j)| j.clone()).collect();
    let first = pool(
        registry,
        opts.concurrency,
        &progress,
        gate,
        client,
        jobs_only,
    )
    .await;
    let mut outcomes: Vec<Option<DeviceOutcome>> = Vec::with_capacity(total);
    let mut again = Vec::new();
    for ((pos, job), handled) in jobs.into_iter().zip(first) {
        match handled {
            Handled::Done(o) => outcomes.push(Some(o)),
            Handled::Again(o) | Handled::CircuitOpen(o, _) => {
                outcomes.push(Some(o));
                again.push((pos, job));
            }
        }
    }
    let retried = again.len();
    if !again.is_empty() {
        progress.next_phase();
        tracing::info!(
            devices = retried,
            "trying again the devices that failed transiently"
        );
        let (indexes, again): (Vec<usize>, Vec<Job>) = again.into_iter().unzip();
        let second = pool(registry, opts.concurrency, &progress, gate, client, again).await;
        for (i, handled) in indexes.into_iter().zip(second) {
            let (Handled::Done(o) | Handled::Again(o) | Handled::CircuitOpen(o, _)) = handled;
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(o);
            }
        }
    }
    if let Some(t) = ticker {
        t.abort();
        // Clear the progress line, if one was drawn.
        eprint!("\r{}\r", " ".repeat(80));
    }
    (outcomes.into_iter().flatten().collect(), retried)
}

/// Handles `jobs`, at most `concurrency` at once, each task in `registry`; results in the jobs'
/// order. While the breaker is open no job starts, and a job the open breaker refused goes back
/// to the queue, for as long as the batch's patience lasts.
async fn pool(
    registry: &Registry,
    concurrency: usize,
    progress: &Arc<Progress>,
    gate: &Arc<BreakerGate>,
    client: &Arc<GraphClient>,
    jobs: Vec<Job>,
) -> Vec<Handled> {
    let n = jobs.len();
    let queue = Arc::new(Mutex::new(
        jobs.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (queue, progress, gate, client) = (
            queue.clone(),
            progress.clone(),
            gate.clone(),
            client.clone(),
        );
        workers.spawn(registry.scope(async move {
            let mut out = Vec::new();
            loop {
                gate.wait(Duration::ZERO).await;
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, job)) = next else { break };
                let handled = handle(&client, &job).await;
                if let Handled::CircuitOpen(_, retry_in) = &handled
                    && gate.patient()
                {
                    let retry_in = *retry_in;
                    queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_front((i, job));
                    // An open breaker: wait out its cooldown with the batch; a half-open one
                    // whose probes are all taken: wait the time it asked for.
                    if gate.breaker.state() == BreakerState::Open {
                        gate.wait(retry_in.max(Duration::from_millis(10))).await;
                    } else {
                        tokio::time::sleep(retry_in.max(Duration::from_millis(10))).await;
                    }
                    continue;
                }
                out.push((i, handled));
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            out
        }));
    }
    let mut results = Vec::with_capacity(n);
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(out) => results.extend(out),
            Err(e) => tracing::error!(error = %e, "a worker panicked"),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Progress of a run, drawn on stderr after the first second when it is a terminal.
#[derive(Debug, Default)]
struct Progress {
    again: std::sync::atomic::AtomicBool,
    done: AtomicUsize,
}

impl Progress {
    fn next_phase(&self) {
        self.again.store(true, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
    }

    async fn show(self: Arc<Self>, total: usize, observer: Arc<Observer>) {
        let started = Instant::now();
        let width = 30;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if started.elapsed() < Duration::from_secs(1) {
                continue;
            }
            let n = self.done.load(Ordering::Relaxed).min(total);
            let filled = (n * width).checked_div(total).unwrap_or(width);
            let phase = if self.again.load(Ordering::Relaxed) {
                "trying again"
            } else {
                "assigning"
            };
            eprint!(
                "\r[{}{}] {phase} {n}/{total}, {} retries, {:.0}s ",
                "#".repeat(filled),
                " ".repeat(width - filled),
                observer.retries.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// The server's view of a run, from its records.
pub fn server_view(records: &Records) -> ServerView {
    ServerView {
        requests: records.requests.len(),
        faults: records
            .faults()
            .into_iter()
            .map(|(k, v)| (k.as_str().to_owned(), v))
            .collect(),
        creates: records.creates.len(),
        duplicates: records.duplicates().len(),
        early_requests: records.early_requests().len(),
        throttle_violations: records.throttle_violations().len(),
        tokens_issued: records.token_issues.len(),
        tokens_expired: records.expired_tokens.len(),
        needless_refreshes: records.needless_token_issues().len(),
    }
}
