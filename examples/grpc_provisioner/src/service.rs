//! The embedded provisioner: an upstream directory whose refusals become terminal statuses, with
//! seeded transient faults and rate limits, and the records tests assert on.
//!
//! # The upstream directory and its refusals
//!
//! Grants are made in a simulated upstream (an Okta-like directory). What it refuses for good is
//! mapped to a [`TerminalError`] and sent with [`to_status_in`]: the seed's gRPC code
//! (`FAILED_PRECONDITION`, or `PERMISSION_DENIED` for `OPERATION_NOT_PERMITTED`) and a structured
//! `ErrorInfo` (`reason`, `domain` = [`DOMAIN`]), with the upstream's code in the detail:
//!
//! | upstream refusal | when | reason |
//! |---|---|---|
//! | `E0000038` user suspended | the user's number ends in 3 | `USER_NOT_PROVISIONABLE` |
//! | `E0000001` membership governed by a group rule | a `group-` whose number ends in 5 | `TARGET_MANAGED_EXTERNALLY` |
//! | `E0000183` no seats left | `app-licensed` once [`ServiceConfig::seats`] are taken | `LICENSE_EXHAUSTED` |
//! | `E0000001` malformed id | a user id other than `user-` and digits | `VALIDATION_FAILURE` |
//! | `E0000006` not permitted | `role-admin` (privileged roles are not delegated) | `OPERATION_NOT_PERMITTED` |
//!
//! # Faults
//!
//! Each request draws a fault with probability [`ServiceConfig::fault_rate`] from a hash of the
//! seed, its `request_id` and its attempt number (the n-th request with that id), so a seed meets
//! the same faults whatever the interleaving: `UNAVAILABLE` or `ABORTED` (nothing applied),
//! `DEADLINE_EXCEEDED` after the grant was applied (the answer is lost; a retry with the same
//! `request_id` gets the same grant), or a rate limit: `RESOURCE_EXHAUSTED` with a `RetryInfo` of
//! [`ServiceConfig::retry_hint`]. A rate limit throttles the whole client (`x-client-id`): a
//! request of that client that arrives before the hint has passed, later than [`GRACE`] after
//! the rate limit was sent, is a violation, recorded and refused again.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use resilience_runtime::tonic::{code_name, rate_limited, to_status_in};
use resilience_runtime::{TerminalError, TerminalReason};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Code, Request, Response, Status};

use crate::proto::{
    GrantRequest, GrantResponse, Provisioner, ProvisionerServer, RevokeRequest, RevokeResponse,
};

/// The `ErrorInfo` domain of the provisioner's terminal statuses.
pub const DOMAIN: &str = "provisioner.example";
/// The metadata key that names the calling client.
pub const CLIENT_ID: &str = "x-client-id";
/// How long after a rate limit was sent a request of the same client may still arrive: it may
/// have left before the rate limit arrived.
pub const GRACE: Duration = Duration::from_millis(50);

/// A fault the server injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// `UNAVAILABLE`, nothing applied.
    Unavailable,
    /// `ABORTED`, nothing applied.
    Aborted,
    /// The grant is applied, then `DEADLINE_EXCEEDED` is answered: the caller cannot tell.
    LostAfterApply,
    /// `RESOURCE_EXHAUSTED` with a `RetryInfo`.
    RateLimited,
}

impl Fault {
    /// Every kind, drawn with equal weight.
    pub const ALL: [Fault; 4] = [
        Fault::Unavailable,
        Fault::Aborted,
        Fault::LostAfterApply,
        Fault::RateLimited,
    ];
}

/// How the embedded server behaves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Share of requests that meet a fault, in `[0, 1]`.
    pub fault_rate: f64,
    /// Seed of the fault draws.
    pub seed: u64,
    /// The wait a rate limit asks for.
    pub retry_hint: Duration,
    /// Seats of `app-licensed`.
    pub seats: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            fault_rate: 0.0,
            seed: 0,
            retry_hint: Duration::from_millis(300),
            seats: 2,
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Arrival.
    pub at: SystemTime,
    /// `Grant` or `Revoke`.
    pub method: &'static str,
    /// The calling client (`x-client-id`, `-` without one).
    pub client_id: String,
    /// The request's `request_id`.
    pub request_id: String,
    /// 1 for the first request with this id, 2 for the next, ...
    pub attempt: u32,
    /// The fault injected, if any.
    pub fault: Option<Fault>,
    /// The code answered (`OK`, `FAILED_PRECONDITION`, ...).
    pub code: &'static str,
    /// The terminal reason answered, if any.
    pub reason: Option<TerminalReason>,
    /// For a rate limit: until when the client must wait.
    pub retry_until: Option<SystemTime>,
    /// Set when the request came inside its client's rate-limit window, past [`GRACE`]: how long
    /// the window had left.
    pub window_violation: Option<Duration>,
}

/// Everything the server recorded.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Every request, in order of arrival.
    pub requests: Vec<RequestRecord>,
    /// Grants applied: `(user, resource)` and the grant id, in order.
    pub grants: Vec<(String, String, String)>,
    /// Revocations applied.
    pub revokes: Vec<(String, String)>,
}

impl Records {
    /// Requests sent with a `request_id` after the server had answered it with a terminal
    /// reason: retries of a failure that will never succeed.
    pub fn retries_of_terminal(&self) -> Vec<&RequestRecord> {
        let mut terminal: HashMap<&str, ()> = HashMap::new();
        let mut out = Vec::new();
        for r in &self.requests {
            if terminal.contains_key(r.request_id.as_str()) {
                out.push(r);
            }
            if r.reason.is_some() {
                terminal.insert(&r.request_id, ());
            }
        }
        out
    }

    /// Requests that came inside their client's rate-limit window.
    pub fn window_violations(&self) -> Vec<&RequestRecord> {
        self.requests
            .iter()
            .filter(|r| r.window_violation.is_some())
            .collect()
    }

    /// `(user, resource)` pairs granted more than once.
    pub fn duplicates(&self) -> Vec<(String, String)> {
        let mut n: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for (u, r, _) in &self.grants {
            *n.entry((u, r)).or_insert(0) += 1;
        }
        n.into_iter()
            .filter(|(_, c)| *c > 1)
            .map(|((u, r), _)| (u.to_owned(), r.to_owned()))
            .collect()
    }

    /// Requests by the code answered.
    pub fn by_code(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for r in &self.requests {
            *m.entry(r.code).or_insert(0) += 1;
        }
        m
    }

    /// Rate limits sent.
    pub fn rate_limits(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.retry_until.is_some())
            .count()
    }
}

#[derive(Debug, Default)]
struct State {
    records: Records,
    attempts: HashMap<String, u32>,
    /// Grant ids by request id: a request id grants once.
    by_request: HashMap<String, String>,
    /// Current grants: `(user, resource)` to grant id.
    granted: HashMap<(String, String), String>,
    seats_taken: usize,
    /// Per client: when its rate limit was sent, and until when it lasts.
    windows: HashMap<String, (SystemTime, SystemTime)>,
}

/// The provisioner: the directory, the faults, the records.
#[derive(Debug)]
pub struct Service {
    config: ServiceConfig,
    state: Mutex<State>,
}

/// A refusal of the upstream directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {summary}")]
pub struct UpstreamError {
    /// The upstream's error code.
    pub code: &'static str,
    /// What it said.
    pub summary: String,
    /// What it means for the caller: never worth retrying.
    pub reason: TerminalReason,
}

fn number(id: &str, prefix: &str) -> Option<u64> {
    id.strip_prefix(prefix)?.parse().ok()
}

impl Service {
    /// A service configured by `config`.
    pub fn new(config: ServiceConfig) -> Service {
        Service {
            config,
            state: Mutex::new(State::default()),
        }
    }

    /// The configuration served.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is one push or insert: a poisoned lock still holds consistent records.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the records.
    pub fn records(&self) -> Records {
        self.lock().records.clone()
    }

    /// What the upstream directory says to granting `resource` to `user`, seats aside.
    fn check(user: &str, resource: &str) -> Result<(), UpstreamError> {
        let Some(n) = number(user, "user-") else {
            return Err(UpstreamError {
                code: "E0000001",
                summary: format!("api validation failed: login {user:?} is not a valid id"),
                reason: TerminalReason::ValidationFailure,
            });
        };
        if n % 10 == 3 {
            return Err(UpstreamError {
                code: "E0000038",
                summary: format!("user {user} is SUSPENDED and cannot be provisioned"),
                reason: TerminalReason::UserNotProvisionable,
            });
        }
        if number(resource, "group-").is_some_and(|g| g % 10 == 5) {
            return Err(UpstreamError {
                code: "E0000001",
                summary: format!("membership of {resource} is governed by a group rule"),
                reason: TerminalReason::TargetManagedExternally,
            });
        }
        if resource == "role-admin" {
            return Err(UpstreamError {
                code: "E0000006",
                summary: "privileged roles are not delegated to connectors".to_owned(),
                reason: TerminalReason::OperationNotPermitted,
            });
        }
        Ok(())
    }

    fn draw(&self, request_id: &str, attempt: u32) -> Option<Fault> {
        let c = &self.config;
        if c.fault_rate <= 0.0 {
            return None;
        }
        let key = fnv1a(request_id.as_bytes());
        if unit(c.seed, key, attempt, 1) >= c.fault_rate {
            return None;
        }
        let pick = (unit(c.seed, key, attempt, 2) * Fault::ALL.len() as f64) as usize;
        Fault::ALL.get(pick.min(Fault::ALL.len() - 1)).copied()
    }

    /// Admits a request: records it, and decides whether a window or a fault answers it.
    fn admit(
        &self,
        method: &'static str,
        client_id: &str,
        request_id: &str,
    ) -> (usize, Option<Fault>, Option<Status>) {
        let at = SystemTime::now();
        let mut s = self.lock();
        let attempt = {
            let n = s.attempts.entry(request_id.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        let window_violation = s
            .windows
            .get(client_id)
            .filter(|(sent, _)| at >= *sent + GRACE)
            .and_then(|(_, until)| until.duration_since(at).ok())
            .filter(|d| !d.is_zero());
        let (fault, refusal) = match window_violation {
            Some(left) => (None, Some(rate_limited("still rate limited", left))),
            None => (self.draw(request_id, attempt), None),
        };
        let mut retry_until = None;
        if fault == Some(Fault::RateLimited) {
            let until = at + self.config.retry_hint;
            retry_until = Some(until);
            let w = s.windows.entry(client_id.to_owned()).or_insert((at, until));
            if w.1 <= at {
                *w = (at, until);
            } else {
                w.1 = w.1.max(until);
            }
        }
        s.records.requests.push(RequestRecord {
            at,
            method,
            client_id: client_id.to_owned(),
            request_id: request_id.to_owned(),
            attempt,
            fault,
            code: "OK",
            reason: None,
            retry_until,
            window_violation,
        });
        (s.records.requests.len() - 1, fault, refusal)
    }

    fn answered(&self, idx: usize, status: Option<&Status>, reason: Option<TerminalReason>) {
        let mut s = self.lock();
        if let Some(r) = s.records.requests.get_mut(idx) {
            r.code = status.map_or("OK", |s| code_name(s.code()));
            r.reason = reason;
        }
    }

    fn fault_status(&self, fault: Fault) -> Status {
        match fault {
            Fault::Unavailable => Status::unavailable("upstream connection pool exhausted"),
            Fault::Aborted => Status::aborted("concurrent modification; try again"),
            Fault::LostAfterApply => Status::deadline_exceeded("upstream answered too late"),
            Fault::RateLimited => {
                rate_limited("upstream rate limit reached", self.config.retry_hint)
            }
        }
    }

    fn grant_now(&self, req: &GrantRequest) -> Result<GrantResponse, UpstreamError> {
        let mut s = self.lock();
        if let Some(id) = s.by_request.get(&req.request_id) {
            return Ok(GrantResponse {
                grant_id: id.clone(),
            });
        }
        Service::check(&req.user_id, &req.resource_id)?;
        let pair = (req.user_id.clone(), req.resource_id.clone());
        if let Some(id) = s.granted.get(&pair).cloned() {
            s.by_request.insert(req.request_id.clone(), id.clone());
            return Ok(GrantResponse { grant_id: id });
        }
        if req.resource_id == "app-licensed" {
            if s.seats_taken >= self.config.seats {
                return Err(UpstreamError {
                    code: "E0000183",
                    summary: format!(
                        "all {} seats of app-licensed are assigned",
                        self.config.seats
                    ),
                    reason: TerminalReason::LicenseExhausted,
                });
            }
            s.seats_taken += 1;
        }
        let id = format!("grant-{:05}", s.records.grants.len() + 1);
        s.records
            .grants
            .push((pair.0.clone(), pair.1.clone(), id.clone()));
        s.granted.insert(pair, id.clone());
        s.by_request.insert(req.request_id.clone(), id.clone());
        Ok(GrantResponse { grant_id: id })
    }

    fn revoke_now(&self, req: &RevokeRequest) -> Result<RevokeResponse, UpstreamError> {
        if number(&req.user_id, "user-").is_none() {
            return Service::check(&req.user_id, &req.resource_id)
                .map(|()| RevokeResponse { was_granted: false });
        }
        let mut s = self.lock();
        let pair = (req.user_id.clone(), req.resource_id.clone());
        let was = s.granted.remove(&pair).is_some();
        if was {
            s.records.revokes.push(pair.clone());
            if pair.1 == "app-licensed" {
                s.seats_taken = s.seats_taken.saturating_sub(1);
            }
        }
        Ok(RevokeResponse { was_granted: was })
    }

    /// Runs one request through the window, the fault draw and the directory.
    fn serve<Req, Resp>(
        &self,
        method: &'static str,
        request: &Request<Req>,
        request_id: &str,
        apply: impl FnOnce() -> Result<Resp, UpstreamError>,
    ) -> Result<Response<Resp>, Status> {
        let client_id = request
            .metadata()
            .get(CLIENT_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let (idx, fault, refusal) = self.admit(method, &client_id, request_id);
        if let Some(status) = refusal {
            self.answered(idx, Some(&status), None);
            return Err(status);
        }
        let outcome = match fault {
            Some(f @ (Fault::Unavailable | Fault::Aborted | Fault::RateLimited)) => {
                Err(self.fault_status(f))
            }
            Some(Fault::LostAfterApply) => {
                let _applied = apply();
                Err(self.fault_status(Fault::LostAfterApply))
            }
            None => apply().map(Response::new).map_err(|e| {
                let terminal = TerminalError::new(e.reason, e.to_string());
                to_status_in(&terminal, DOMAIN)
            }),
        };
        match &outcome {
            Ok(_) => self.answered(idx, None, None),
            Err(status) => {
                let reason = resilience_runtime::tonic::from_status(status).map(|t| t.reason());
                self.answered(idx, Some(status), reason);
            }
        }
        outcome
    }
}

impl Provisioner for Service {
    async fn grant(
        &self,
        request: Request<GrantRequest>,
    ) -> Result<Response<GrantResponse>, Status> {
        let req = request.get_ref().clone();
        if req.request_id.is_empty() {
            return Err(Status::invalid_argument("request_id is required"));
        }
        self.serve("Grant", &request, &req.request_id, || self.grant_now(&req))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let req = request.get_ref().clone();
        if req.request_id.is_empty() {
            return Err(Status::invalid_argument("request_id is required"));
        }
        self.serve("Revoke", &request, &req.request_id, || {
            self.revoke_now(&req)
        })
    }
}

/// A running embedded server. Dropping it stops it.
#[derive(Debug)]
pub struct ServiceHandle {
    addr: SocketAddr,
    service: Arc<Service>,
    stop: Option<oneshot::Sender<()>>,
}

impl ServiceHandle {
    /// Binds `127.0.0.1:0` and serves `config` in the background.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    pub async fn start(config: ServiceConfig) -> std::io::Result<ServiceHandle> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let service = Arc::new(Service::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = ProvisionerServer::from_arc(service.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let r = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "the provisioner stopped");
            }
        });
        Ok(ServiceHandle {
            addr,
            service,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The service, for its records.
    pub fn service(&self) -> &Service {
        &self.service
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The code a terminal reason travels with.
pub fn code_of(reason: TerminalReason) -> Code {
    resilience_runtime::tonic::code(reason.grpc_code())
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

/// A uniform draw in `[0, 1)` from the seed, a request, its attempt and a salt.
fn unit(seed: u64, key: u64, attempt: u32, salt: u64) -> f64 {
    let h = splitmix(seed ^ splitmix(key ^ splitmix(u64::from(attempt) | (salt << 32))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}
