//! Shared fixtures: an error type classified with the derive, and a scripted dependency that
//! records every attempt on the paused tokio clock.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::{ConnectorError, Registry, Rejected};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, ConnectorError)]
pub enum ApiError {
    #[error("unavailable")]
    #[connector(transient)]
    Unavailable,
    #[error("maintenance")]
    #[connector(transient)]
    Maintenance,
    #[error("not found")]
    #[connector(permanent)]
    NotFound,
    #[error("conflict")]
    #[connector(permanent)]
    Conflict,
    #[error("forbidden")]
    #[connector(policy)]
    Forbidden,
    #[error("unauthorized")]
    #[connector(auth)]
    Unauthorized,
    #[error("throttled")]
    #[connector(throttled, code = "429")]
    Throttled {
        #[connector(retry_after)]
        retry_after: Option<Duration>,
    },
    /// MicroProfile `failOn` for an exception that is not retried.
    #[error("corrupt")]
    #[connector(permanent, breaker = "failure")]
    Corrupt,
    /// MicroProfile `skipOn`-ish: retried, but no sign of ill health.
    #[error("locked")]
    #[connector(transient, breaker = "ignored")]
    Locked,
    /// Counted as a success by the breaker although it is an error.
    #[error("gone")]
    #[connector(permanent, breaker = "success")]
    Gone,
    /// A 503 with `Retry-After`: transient, with a hint.
    #[error("busy")]
    #[connector(transient)]
    Busy {
        #[connector(retry_after)]
        retry_after: Option<Duration>,
    },
    /// Classified by the HTTP status table.
    #[error("http {status}")]
    #[connector(status = status)]
    Http { status: u16 },
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Unavailable,
    Maintenance,
    NotFound,
    Conflict,
    Forbidden,
    Unauthorized,
    Throttled(Option<Duration>),
    Corrupt,
    Locked,
    Gone,
    Busy(Option<Duration>),
    Http(u16),
}

impl Kind {
    pub fn error(self) -> ApiError {
        match self {
            Kind::Unavailable => ApiError::Unavailable,
            Kind::Maintenance => ApiError::Maintenance,
            Kind::NotFound => ApiError::NotFound,
            Kind::Conflict => ApiError::Conflict,
            Kind::Forbidden => ApiError::Forbidden,
            Kind::Unauthorized => ApiError::Unauthorized,
            Kind::Throttled(retry_after) => ApiError::Throttled { retry_after },
            Kind::Corrupt => ApiError::Corrupt,
            Kind::Locked => ApiError::Locked,
            Kind::Gone => ApiError::Gone,
            Kind::Busy(retry_after) => ApiError::Busy { retry_after },
            Kind::Http(status) => ApiError::Http { status },
        }
    }
}

/// What one attempt does.
#[derive(Clone, Debug)]
pub enum Step {
    Ok(u32),
    Fail(Kind),
    /// Sleeps (on the tokio clock), then does the inner step.
    Sleep(Duration, Box<Step>),
}

pub fn ok(v: u32) -> Step {
    Step::Ok(v)
}
pub fn fail(k: Kind) -> Step {
    Step::Fail(k)
}
pub fn slow(ms: u64, then: Step) -> Step {
    Step::Sleep(Duration::from_millis(ms), Box::new(then))
}

/// A scripted dependency: pops a step per attempt (then repeats `default`), and records each
/// attempt's start (since the dependency was made) and the highest concurrency seen.
pub struct Dep {
    script: Mutex<VecDeque<Step>>,
    default: Step,
    t0: Instant,
    starts: Mutex<Vec<Duration>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct InFlight<'a>(&'a AtomicUsize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Dep {
    pub fn new(default: Step) -> Dep {
        Dep::scripted(Vec::new(), default)
    }

    pub fn scripted(script: Vec<Step>, default: Step) -> Dep {
        Dep {
            script: Mutex::new(script.into()),
            default,
            t0: Instant::now(),
            starts: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// Appends steps to the script.
    pub fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.script.lock().unwrap().extend(steps);
    }

    /// One attempt.
    pub async fn call(&self) -> Result<u32, ApiError> {
        self.starts.lock().unwrap().push(self.t0.elapsed());
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(n, Ordering::SeqCst);
        let _guard = InFlight(&self.in_flight);
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.clone());
        run(step).await
    }

    pub fn attempts(&self) -> usize {
        self.starts.lock().unwrap().len()
    }

    /// Attempt starts in milliseconds since the dependency was made.
    pub fn starts_ms(&self) -> Vec<u128> {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_millis())
            .collect()
    }

    pub fn starts(&self) -> Vec<Duration> {
        self.starts.lock().unwrap().clone()
    }

    /// Gaps between consecutive attempt starts.
    pub fn gaps(&self) -> Vec<Duration> {
        let s = self.starts();
        s.windows(2).map(|w| w[1] - w[0]).collect()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

fn run(
    step: Step,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, ApiError>> + Send>> {
    Box::pin(async move {
        match step {
            Step::Ok(v) => Ok(v),
            Step::Fail(k) => Err(k.error()),
            Step::Sleep(d, then) => {
                tokio::time::sleep(d).await;
                run(*then).await
            }
        }
    })
}

/// An isolated registry with a fixed jitter seed, configured from TOML as the docs show.
pub fn registry(toml: &str) -> Registry {
    let r = Registry::new().with_seed(7);
    if !toml.trim().is_empty() {
        r.apply(&RegistryConfig::from_toml_str(toml).expect("valid configuration"));
    }
    r
}

pub fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

pub fn secs(v: u64) -> Duration {
    Duration::from_secs(v)
}

/// Which error reached a fallback, as a number (so the fallback's `Ok` says it).
pub fn fallback_code(e: &ApiError) -> Option<u32> {
    match e {
        ApiError::Rejected(Rejected::DeadlineExceeded { .. }) => Some(900),
        ApiError::Rejected(Rejected::CircuitOpen { .. }) => Some(901),
        ApiError::Rejected(Rejected::AttemptTimeout { .. }) => Some(902),
        ApiError::Unavailable => Some(903),
        ApiError::Rejected(Rejected::BulkheadFull { .. }) => Some(904),
        ApiError::Rejected(Rejected::RateLimited { .. }) => Some(905),
        _ => None,
    }
}

/// A fallback of the error alone (README: "A fn of the error alone, `fn(E) -> Result<T, E>`,
/// works too"): answers with the code of the error it got, or gives an unknown error back.
pub fn fb(e: ApiError) -> Result<u32, ApiError> {
    match fallback_code(&e) {
        Some(c) => Ok(c),
        None => Err(e),
    }
}

pub fn is_open(r: &Result<u32, ApiError>) -> bool {
    matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { .. })))
}
