//! The connector: Graph/Intune calls, each written as ONE attempt and made resilient by
//! `#[resilient(...)]`; errors classified by `#[derive(ConnectorError)]`.
//!
//! What the annotations buy, with no retry loop in this file:
//!
//! - 429, 5xx, timeouts and dropped connections are retried with backoff, and a `Retry-After`
//!   (seconds or HTTP date) is honoured: no request goes out before it has passed;
//! - a create carries `Idempotency-Key: {intent_id}-create-assignment`, the same on every attempt,
//!   so a retried create whose first answer was lost meets `409` and resolves to the existing
//!   assignment through `Location`: no duplicate;
//! - a `401` refreshes the token and retries once, and the refresh is single-flight: many calls
//!   that meet the same expired token cause one refresh;
//! - a `403` is a policy violation: never retried, reported with its class;
//! - every call goes through the `graph` breaker, which stops calling while it is open;
//! - every call has a `deadline`, retries and waits included: the worst-case schedule of its
//!   backoff and timeouts, rounded up, so only long `Retry-After` waits can meet it;
//! - every request carries a `client-request-id` (as Graph's SDKs send), which the server records.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::{StatusCode, header};
use resilience_runtime::events::{self, EventSink, RuntimeEvent};
use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::{CallContext, Classify, ConnectorError, Registry, Rejected, resilient};
use serde::Deserialize;

use crate::report::{DeviceOutcome, OperationRow, Report, ServerView, Transition, Waits};
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

/// The breakers, budgets and limits of the example, as a deployment would ship them: short
/// cooldowns so a demo run sees its breaker close again.
pub const RESILIENCE_TOML: &str = include_str!("../resilience.toml");

/// Everything a Graph call can fail with, and what each failure means for the next attempt.
#[derive(Debug, thiserror::Error, ConnectorError)]
pub enum GraphError {
    /// `429`: the server asks the client to slow down, and says for how long.
    #[error("throttled by the server")]
    #[connector(transient, code = "429")]
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
    /// `404`: the resource does not exist (or is not visible yet: eventual consistency).
    #[error("not found: {0}")]
    #[connector(permanent, code = "404")]
    NotFound(String),
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

/// A bearer token and its generation (1 for the first token, 2 after the first refresh, ...).
#[derive(Debug, Clone)]
struct Token {
    value: Arc<str>,
    generation: u64,
}

/// A Graph client.
#[derive(Debug)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    client_id: String,
    /// The token in use: read by every attempt, replaced by a refresh.
    token: Mutex<Option<Token>>,
    /// Held while a token is fetched, so concurrent refreshes queue behind one request.
    refreshing: tokio::sync::Mutex<()>,
    /// The newest token generation the server refused.
    refused: AtomicU64,
    refreshes: AtomicU64,
    /// Numbers the requests sent, for their `client-request-id`.
    requests: AtomicU64,
    /// Where sent requests are logged, if a test asked for it.
    send_log: Option<Arc<SendLog>>,
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
            http,
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            client_id: client_id.into(),
            token: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            refused: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            send_log: None,
        })
    }

    /// Logs every request this client sends into `log` (see [`SendLog`]).
    #[must_use]
    pub fn with_send_log(mut self, log: Arc<SendLog>) -> Self {
        self.send_log = Some(log);
        self
    }

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

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Tokens fetched to replace a refused one.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<Token> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The token to send: the current one, or a first one.
    async fn bearer(&self) -> Result<Token, GraphError> {
        if let Some(t) = self.current() {
            return Ok(t);
        }
        self.refresh_token().await?;
        self.current().ok_or(GraphError::Unauthorized)
    }

    /// Replaces a refused token, once per refusal however many calls ask.
    ///
    /// This is the `refresh` hook of every call: the engine runs it when an attempt fails with an
    /// `auth` error, then retries once. Calls that met the same expired token queue on the lock;
    /// the first fetches a new token, the others find a generation newer than the refused one and
    /// return at once.
    ///
    /// # Errors
    ///
    /// When no token can be had.
    pub async fn refresh_token(&self) -> Result<(), GraphError> {
        let _single_flight = self.refreshing.lock().await;
        let refused = self.refused.load(Ordering::Acquire);
        let previous = self.current();
        if let Some(t) = &previous
            && t.generation > refused
        {
            return Ok(());
        }
        let fresh = self.fetch_token().await?;
        let generation = previous.as_ref().map_or(1, |t| t.generation + 1);
        if previous.is_some() {
            self.refreshes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(generation, "access token refreshed");
        }
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(Token {
            value: fresh.access_token.into(),
            generation,
        });
        Ok(())
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
        let resp = self.check(resp, None).await?;
        resp.json().await.map_err(GraphError::network)
    }

    /// Turns a non-success answer into its error.
    async fn check(
        &self,
        resp: reqwest::Response,
        token: Option<&Token>,
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
            return Err(GraphError::Throttled { retry_after });
        }
        if status == StatusCode::UNAUTHORIZED {
            if let Some(t) = token {
                self.refused.fetch_max(t.generation, Ordering::AcqRel);
            }
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

    /// `GET` one page of devices (`url` is the first page's or a `nextLink`).
    #[resilient(
        connector = "graph",
        retries = 5,
        backoff(base = "100ms", max = "2s"),
        breaker = "graph",
        idempotent,
        timeout = "2s",
        deadline = "16s",
        refresh = Self::refresh_token
    )]
    pub async fn list_page(&self, url: &str) -> Result<Page, GraphError> {
        let token = self.bearer().await?;
        let (req, _sent) = self.stamp(self.http.get(url).bearer_auth(&token.value));
        let resp = req.send().await.map_err(GraphError::network)?;
        let resp = self.check(resp, Some(&token)).await?;
        resp.json().await.map_err(GraphError::network)
    }

    /// Every device, following `@odata.nextLink` to the last page.
    ///
    /// # Errors
    ///
    /// The first page that fails for good.
    pub async fn list_devices(&self, page_size: usize) -> Result<Vec<Device>, GraphError> {
        let mut url = Some(format!("{}/v1.0/devices?$top={page_size}", self.base_url));
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
    /// The idempotency key is the same on every attempt of a call. When an earlier attempt was
    /// applied but its answer lost, this attempt meets `409` and resolves to the existing
    /// assignment through `Location`.
    #[resilient(
        connector = "graph",
        retries = 5,
        backoff(base = "100ms", max = "2s"),
        breaker = "graph",
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
        let token = self.bearer().await?;
        let (req, _sent) = self.stamp(
            self.http
                .post(format!("{}/v1.0/assignments", self.base_url))
                .bearer_auth(&token.value)
                .header("Idempotency-Key", &key)
                .json(&AssignmentRequest {
                    intent_id: intent_id.to_owned(),
                    device_id: device_id.to_owned(),
                    app_id: app_id.to_owned(),
                }),
        );
        let resp = req.send().await.map_err(GraphError::network)?;
        if resp.status() == StatusCode::CONFLICT {
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| GraphError::Decode("409 without a Location".into()))?;
            return self.existing(&location, &token, device_id, app_id).await;
        }
        let resp = self.check(resp, Some(&token)).await?;
        resp.json().await.map_err(GraphError::network)
    }

    /// The assignment a `409` points at. It may not be readable yet (eventual consistency): its
    /// id is in the `Location` either way.
    async fn existing(
        &self,
        location: &str,
        token: &Token,
        device_id: &str,
        app_id: &str,
    ) -> Result<Assignment, GraphError> {
        let (req, _sent) = self.stamp(self.http.get(location).bearer_auth(&token.value));
        let resp = req.send().await.map_err(GraphError::network)?;
        let mut a = match self.check(resp, Some(token)).await {
            Ok(resp) => resp
                .json::<Assignment>()
                .await
                .map_err(GraphError::network)?,
            Err(GraphError::NotFound(_)) => Assignment {
                id: location.rsplit('/').next().unwrap_or_default().to_owned(),
                device_id: device_id.to_owned(),
                app_id: app_id.to_owned(),
                resolved_conflict: true,
            },
            Err(e) => return Err(e),
        };
        a.resolved_conflict = true;
        Ok(a)
    }

    /// `GET /v1.0/assignments/{id}`. A new assignment is `404` for a short while (eventual
    /// consistency, seed 000): here, and only here, `404` is retried.
    #[resilient(
        connector = "graph",
        retries = 5,
        backoff(base = "100ms", max = "1s"),
        breaker = "graph",
        idempotent,
        timeout = "2s",
        deadline = "15s",
        refresh = Self::refresh_token,
        retry_on = [GraphError::NotFound]
    )]
    pub async fn read_assignment(&self, id: &str) -> Result<Assignment, GraphError> {
        let token = self.bearer().await?;
        let (req, _sent) = self.stamp(
            self.http
                .get(format!("{}/v1.0/assignments/{id}", self.base_url))
                .bearer_auth(&token.value),
        );
        let resp = req.send().await.map_err(GraphError::network)?;
        let resp = self.check(resp, Some(&token)).await?;
        resp.json().await.map_err(GraphError::network)
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

/// The app a device is assigned: every tenth asks for [`BLOCKED_APP`].
pub fn app_for(index: usize) -> &'static str {
    if index % 10 == 9 { BLOCKED_APP } else { APP }
}

/// The deployment intent of a device's assignment; the idempotency key derives from it.
pub fn intent_for(device_id: &str, app_id: &str) -> String {
    format!("intent-{device_id}-{app_id}")
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Devices processed at once.
    pub concurrency: usize,
    /// Page size asked for when listing.
    pub page_size: usize,
    /// Assign at most this many of the listed devices.
    pub max_devices: Option<usize>,
    /// Show progress on stderr (when it is a terminal).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            concurrency: 8,
            page_size: 20,
            max_devices: None,
            progress: false,
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

fn failed(device_id: &str, stage: &str, e: &GraphError) -> DeviceOutcome {
    DeviceOutcome::Failed {
        device_id: device_id.to_owned(),
        stage: stage.to_owned(),
        class: e.class().as_str().to_owned(),
        code: e.code().map(str::to_owned),
        message: error_chain(e),
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

/// Creates one device's assignment.
async fn create(
    client: &GraphClient,
    index: usize,
    device: &Device,
) -> Result<Assignment, DeviceOutcome> {
    let app = app_for(index);
    let intent = intent_for(&device.id, app);
    client
        .create_assignment(&intent, &device.id, app)
        .await
        .map_err(|e| failed(&device.id, "create", &e))
}

/// Reads one assignment back.
async fn read(client: &GraphClient, created: Assignment) -> DeviceOutcome {
    match client.read_assignment(&created.id).await {
        Ok(read) => DeviceOutcome::Assigned {
            device_id: created.device_id,
            assignment_id: read.id,
            resolved_conflict: created.resolved_conflict,
        },
        Err(e) => failed(&created.device_id, "read", &e),
    }
}

/// Lists every device, assigns each its app (at most `concurrency` at once), reads each
/// assignment back, and reports. Every call runs in `registry`.
pub async fn run(client: Arc<GraphClient>, registry: &Registry, opts: &RunOptions) -> Report {
    let started = Instant::now();
    let observer = Arc::new(Observer {
        started,
        retries: AtomicU64::new(0),
        inner: Mutex::new(ObserverState::default()),
    });
    let sink: Arc<dyn EventSink> = observer.clone();
    events::add_sink(sink.clone());

    let mut report = Report {
        base_url: client.base_url().to_owned(),
        concurrency: opts.concurrency.max(1),
        ..Report::default()
    };
    match registry
        .scope(client.list_devices(opts.page_size.max(1)))
        .await
    {
        Ok(mut devices) => {
            if let Some(n) = opts.max_devices {
                devices.truncate(n);
            }
            report.devices = devices.len();
            report.device_outcomes = assign_all(&client, registry, devices, opts, &observer).await;
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
        let k = match d {
            DeviceOutcome::Assigned { .. } => "assigned",
            DeviceOutcome::Failed { class, .. } => class.as_str(),
        };
        *report.devices_by_outcome.entry(k.to_owned()).or_insert(0) += 1;
    }
    let metrics = registry.metrics();
    for op in [
        "list_page",
        "create_assignment",
        "read_assignment",
        "fetch_token",
    ] {
        if let Some(site) = metrics.site(op) {
            let m = &site.metrics;
            report.operations.push(OperationRow {
                operation: op.to_owned(),
                calls: m.calls(),
                ok: m.ok,
                errors: resilience_runtime::ErrorClass::ALL
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
    report.token_refreshes = client.refreshes();
    report
}

/// Creates every device's assignment, then reads each back: by then most are visible, and the
/// few that are not yet are retried (`retry_on = [GraphError::NotFound]`).
async fn assign_all(
    client: &Arc<GraphClient>,
    registry: &Registry,
    devices: Vec<Device>,
    opts: &RunOptions,
    observer: &Arc<Observer>,
) -> Vec<DeviceOutcome> {
    let total = devices.len();
    let progress = Arc::new(Progress::default());
    let ticker = (opts.progress && std::io::stderr().is_terminal())
        .then(|| tokio::spawn(progress.clone().show(total, observer.clone())));

    let created = pool(
        registry,
        opts.concurrency,
        &progress,
        devices.into_iter().enumerate().collect(),
        {
            let client = client.clone();
            move |(i, device): (usize, Device)| {
                let client = client.clone();
                async move { create(&client, i, &device).await }
            }
        },
    )
    .await;
    progress.next_phase();
    let mut outcomes: Vec<Option<DeviceOutcome>> = Vec::with_capacity(total);
    let mut to_read = Vec::new();
    for (i, c) in created.into_iter().enumerate() {
        match c {
            Ok(a) => {
                outcomes.push(None);
                to_read.push((i, a));
            }
            Err(failed) => outcomes.push(Some(failed)),
        }
    }
    let read_back = pool(registry, opts.concurrency, &progress, to_read, {
        let client = client.clone();
        move |(i, a): (usize, Assignment)| {
            let client = client.clone();
            async move { (i, read(&client, a).await) }
        }
    })
    .await;
    for (i, outcome) in read_back {
        if let Some(slot) = outcomes.get_mut(i) {
            *slot = Some(outcome);
        }
    }
    if let Some(t) = ticker {
        t.abort();
        // Clear the progress line, if one was drawn.
        eprint!("\r{}\r", " ".repeat(80));
    }
    outcomes.into_iter().flatten().collect()
}

/// Runs `f` on every item, at most `concurrency` at once, each task in `registry`; results in
/// the items' order.
async fn pool<T, R, F, Fut>(
    registry: &Registry,
    concurrency: usize,
    progress: &Arc<Progress>,
    items: Vec<T>,
    f: F,
) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = R> + Send,
{
    let n = items.len();
    let queue = Arc::new(Mutex::new(
        items.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (queue, progress, f) = (queue.clone(), progress.clone(), f.clone());
        workers.spawn(registry.scope(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((i, item)) = next else { break };
                out.push((i, f(item).await));
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
    reading: std::sync::atomic::AtomicBool,
    done: AtomicUsize,
}

impl Progress {
    fn next_phase(&self) {
        self.reading.store(true, Ordering::Relaxed);
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
            let phase = if self.reading.load(Ordering::Relaxed) {
                "reading back"
            } else {
                "creating"
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
        tokens_issued: records.token_issues.len(),
        tokens_expired: records.expired_tokens.len(),
        needless_refreshes: records.needless_token_issues().len(),
    }
}
