//! The backend's task: it owns the connection, publishes what the replica's breakers tell it,
//! leases probe slots, and every sync interval reads the fleet's breaker state and budgets back
//! (or, while the server is unreachable, tries it again). Nothing a call waits for runs here.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Inner, breakers, budgets, lock};

/// What the task is asked to do between syncs.
#[derive(Debug)]
pub(super) enum Op {
    /// A replica's breaker tripped: count it toward the quorum.
    Trip {
        name: Arc<str>,
        member: String,
        cooldown_ms: u64,
        quorum: u32,
    },
    /// The replica's probe failed: open the fleet's breaker again, free its slots.
    Reopen {
        name: Arc<str>,
        member: String,
        cooldown_ms: u64,
        slots: u32,
    },
    /// The replica's probe closed the breaker: close it for the fleet, free its slots.
    Close {
        name: Arc<str>,
        member: String,
        slots: u32,
    },
    /// Hold `want` of the member's `slots` probe slots (0: free them).
    Probes {
        name: Arc<str>,
        member: String,
        slots: u32,
        want: u32,
    },
}

/// Why a round trip gave no answer.
#[derive(Debug)]
pub(super) enum RoundTripError {
    /// It took longer than its limit.
    Timeout(Duration),
    /// The server or the connection failed.
    Redis(redis::RedisError),
}

impl fmt::Display for RoundTripError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundTripError::Timeout(d) => write!(f, "no answer within {d:?}"),
            RoundTripError::Redis(e) => write!(f, "{e}"),
        }
    }
}

/// `fut`, a round trip, bounded by `limit`.
pub(super) async fn round_trip<T>(
    limit: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RoundTripError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RoundTripError::Redis(e)),
        Err(_) => Err(RoundTripError::Timeout(limit)),
    }
}

/// Gives the queue back when the task ends (its runtime shut down), so that a later use inside
/// another runtime starts a new one.
struct Running {
    inner: Weak<Inner>,
    rx: Option<mpsc::Receiver<Op>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            *lock(&inner.rx) = self.rx.take();
            inner.conn.store(None);
            inner.running.store(false, Ordering::Release);
        }
    }
}

/// Starts the task on the current runtime unless it runs; nothing outside a runtime.
pub(super) fn start(inner: &Arc<Inner>) {
    if inner.running.load(Ordering::Acquire) {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(rx) = lock(&inner.rx).take() else {
        return; // another thread is starting it
    };
    inner.running.store(true, Ordering::Release);
    *lock(&inner.runtime) = Some(handle.clone());
    let running = Running {
        inner: Arc::downgrade(inner),
        rx: Some(rx),
    };
    handle.spawn(run(running));
}

async fn run(mut running: Running) {
    let Some(interval) = running.inner.upgrade().map(|i| i.config.sync_interval) else {
        return;
    };
    let mut next = Instant::now();
    loop {
        // A sync is due: before any op, so that a stream of ops never starves it.
        if Instant::now() >= next {
            let Some(inner) = running.inner.upgrade() else {
                return;
            };
            sync(&inner).await;
            next = Instant::now() + interval;
            continue;
        }
        let Some(rx) = running.rx.as_mut() else {
            return;
        };
        match tokio::time::timeout_at(next, rx.recv()).await {
            Ok(Some(op)) => {
                let Some(inner) = running.inner.upgrade() else {
                    return;
                };
                apply(&inner, op).await;
            }
            // Every handle is gone.
            Ok(None) => return,
            Err(_) => {}
        }
    }
}

/// The connection, made on this task's runtime the first time.
fn connection(inner: &Inner) -> Option<ConnectionManager> {
    if let Some(c) = inner.conn.load().as_deref() {
        return Some(c.clone());
    }
    match ConnectionManager::new_lazy_with_config(
        inner.config.client.clone(),
        inner.manager_config(),
    ) {
        Ok(c) => {
            inner.conn.store(Some(Arc::new(c.clone())));
            Some(c)
        }
        Err(e) => {
            inner.failed("connect", &e);
            None
        }
    }
}

/// One sync: reach the server if it was not, then read the fleet's breakers and budgets back.
async fn sync(inner: &Inner) {
    let Some(mut conn) = connection(inner) else {
        return;
    };
    if !inner.sharing() {
        // No call waits for this one: a connection being made may take the whole interval.
        let limit = inner
            .config
            .sync_interval
            .max(inner.config.round_trip_limit);
        let ping = redis::cmd("PING");
        match round_trip(limit, ping.query_async::<String>(&mut conn)).await {
            Ok(_) => inner.succeeded(),
            Err(e) => return inner.failed("ping", &e),
        }
    }
    if let Err(e) = breakers::sync(inner, &mut conn).await {
        return inner.failed("breaker sync", &e);
    }
    if let Err(e) = budgets::sync(inner, &mut conn).await {
        return inner.failed("budget sync", &e);
    }
    inner.syncs.send_modify(|n| *n += 1);
}

/// Carries out one op; dropped while the server cannot be reached (local state decides then,
/// and the fleet learns this replica's state again from its next transitions).
async fn apply(inner: &Inner, op: Op) {
    if !inner.sharing() {
        return;
    }
    let Some(mut conn) = inner.conn.load().as_deref().cloned() else {
        return;
    };
    if let Err(e) = breakers::apply(inner, &mut conn, op).await {
        inner.failed("breaker publication", &e);
    }
}
