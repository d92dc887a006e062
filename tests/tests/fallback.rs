//! `fallback` runs after the last failure, with the receiver, the arguments by reference and
//! the last error; `fallback_on` picks the errors that reach it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::{ConnectorError, Registry, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Unavailable,
    #[connector(permanent)]
    NotFound,
    #[connector(transient)]
    Throttled,
}

fn metrics(registry: &Registry, operation: &str) -> resilience_runtime::metrics::SiteMetrics {
    registry
        .metrics()
        .site(operation)
        .map(|s| s.metrics.clone())
        .unwrap_or_default()
}

static RUNS: AtomicU32 = AtomicU32::new(0);

/// The form that takes the error alone.
fn cached_devices(error: ApiError) -> Result<Vec<String>, ApiError> {
    match error {
        ApiError::Unavailable => Ok(vec!["cached".to_owned()]),
        other => Err(other),
    }
}

#[resilient(retries = 2, idempotent, jitter = "none", fallback = cached_devices)]
async fn devices(found: bool) -> Result<Vec<String>, ApiError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    if found {
        Err(ApiError::Unavailable)
    } else {
        Err(ApiError::NotFound)
    }
}

#[tokio::test(start_paused = true)]
async fn fallback_runs_after_the_last_failure() {
    let registry = Registry::new();
    let r = registry.scope(devices(true)).await;
    assert_eq!(r.unwrap(), ["cached"]);
    assert_eq!(RUNS.swap(0, Ordering::SeqCst), 3);

    // The fallback sees the last error and may pass it on.
    let r = registry.scope(devices(false)).await;
    assert!(matches!(r, Err(ApiError::NotFound)));
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    let m = metrics(&registry, "devices");
    assert_eq!(m.fallbacks, 2);
    assert_eq!(m.retries, 2);
}

#[derive(Debug, Clone, PartialEq)]
struct Device {
    id: u64,
    name: String,
}

/// A client with a cache of what it last read: the async `&self` fallback answers from it.
struct Graph {
    up: bool,
    cache: Mutex<HashMap<u64, Device>>,
    /// The arguments the fallback saw, in order, and the error.
    seen: Mutex<Vec<String>>,
}

impl Graph {
    // The fallback gets each argument by reference, as declared: `&Vec<String>`.
    #[allow(clippy::ptr_arg)]
    async fn cached(
        &self,
        id: &u64,
        tenant: &str,
        fields: &Vec<String>,
        error: ApiError,
    ) -> Result<Device, ApiError> {
        tokio::task::yield_now().await;
        self.seen
            .lock()
            .unwrap()
            .push(format!("{id} {tenant} {} {error:?}", fields.join(",")));
        self.cache.lock().unwrap().get(id).cloned().ok_or(error)
    }

    #[resilient(
        retries = 1,
        idempotent,
        jitter = "none",
        fallback = Self::cached,
        fallback_on = [ApiError::Unavailable, ApiError::Throttled]
    )]
    async fn device(&self, id: u64, tenant: &str, fields: Vec<String>) -> Result<Device, ApiError> {
        if !self.up {
            return Err(match id {
                404 => ApiError::NotFound,
                429 => ApiError::Throttled,
                _ => ApiError::Unavailable,
            });
        }
        let device = Device {
            id,
            name: format!("{tenant}:{}", fields.join(",")),
        };
        self.cache.lock().unwrap().insert(id, device.clone());
        Ok(device)
    }
}

#[tokio::test(start_paused = true)]
async fn an_async_fallback_of_self_reads_the_cache_with_the_arguments_in_order() {
    let registry = Registry::new();
    let mut graph = Graph {
        up: true,
        cache: Mutex::new(HashMap::new()),
        seen: Mutex::new(Vec::new()),
    };
    let fields = vec!["name".to_owned(), "os".to_owned()];
    let fresh = registry
        .scope(graph.device(7, "contoso", fields.clone()))
        .await
        .unwrap();
    assert_eq!(fresh.name, "contoso:name,os");

    graph.up = false;
    // Down: the cached device, read by the fallback with the same arguments.
    let r = registry
        .scope(graph.device(7, "contoso", fields.clone()))
        .await;
    assert_eq!(r.unwrap(), fresh);
    // Not cached: the fallback passes the error on.
    let r = registry
        .scope(graph.device(8, "fabrikam", Vec::new()))
        .await;
    assert!(matches!(r, Err(ApiError::Unavailable)));
    assert_eq!(
        *graph.seen.lock().unwrap(),
        ["7 contoso name,os Unavailable", "8 fabrikam  Unavailable"]
    );
    // `Throttled` is in `fallback_on` too.
    let r = registry
        .scope(graph.device(429, "contoso", Vec::new()))
        .await;
    assert!(matches!(r, Err(ApiError::Throttled)));
    assert_eq!(graph.seen.lock().unwrap().len(), 3);
    // `NotFound` is not in `fallback_on`: returned as it is, without the fallback.
    let r = registry.scope(graph.device(404, "contoso", fields)).await;
    assert!(matches!(r, Err(ApiError::NotFound)));
    assert_eq!(graph.seen.lock().unwrap().len(), 3);
    let m = metrics(&registry, "device");
    assert_eq!(m.fallbacks, 3, "only the errors the fallback took count");
    assert_eq!(m.ok, 1);
}

/// A `&mut self` site whose fallback takes `&mut self` too.
struct Counter {
    failures: u32,
    fallbacks: u32,
}

impl Counter {
    fn count_fallback(&mut self, step: &u32, _: ApiError) -> Result<u32, ApiError> {
        self.fallbacks += 1;
        Ok(*step * 100)
    }

    #[resilient(fallback = Self::count_fallback)]
    async fn bump(&mut self, step: u32) -> Result<u32, ApiError> {
        if self.failures > 0 {
            self.failures -= 1;
            return Err(ApiError::Unavailable);
        }
        Ok(step)
    }
}

#[tokio::test(start_paused = true)]
async fn a_mut_self_fallback_gets_the_receiver_mutably() {
    let registry = Registry::new();
    let mut counter = Counter {
        failures: 1,
        fallbacks: 0,
    };
    assert_eq!(registry.scope(counter.bump(3)).await.unwrap(), 300);
    assert_eq!(registry.scope(counter.bump(3)).await.unwrap(), 3);
    assert_eq!(counter.fallbacks, 1);
}

/// A blocking site and its plain fallback, with an owned argument the body consumes.
#[allow(clippy::ptr_arg)]
fn from_disk(path: &String, error: ApiError) -> Result<usize, ApiError> {
    match error {
        ApiError::Unavailable => Ok(path.len() * 10),
        other => Err(other),
    }
}

static READS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 1, idempotent, backoff(base = "10ms"), fallback = from_disk)]
fn read(path: String) -> Result<usize, ApiError> {
    READS.fetch_add(1, Ordering::SeqCst);
    drop(path);
    Err(ApiError::Unavailable)
}

#[test]
fn a_blocking_site_gets_its_plain_fallback() {
    let slept = std::sync::Arc::new(Mutex::new(Vec::new()));
    let log = slept.clone();
    let registry = Registry::new().with_blocking_sleep(move |d| log.lock().unwrap().push(d));
    assert_eq!(registry.enter(|| read("a.toml".to_owned())).unwrap(), 60);
    assert_eq!(READS.load(Ordering::SeqCst), 2);
    assert_eq!(slept.lock().unwrap().len(), 1);
    assert_eq!(metrics(&registry, "read").fallbacks, 1);
}

#[derive(Debug, thiserror::Error, ConnectorError)]
enum TimedError {
    #[error("not found")]
    #[connector(permanent)]
    NotFound,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] resilience_runtime::Rejected),
}

/// A slow cache: ten seconds to answer.
async fn slow_cache(_error: TimedError) -> Result<u32, TimedError> {
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    Ok(77)
}

#[resilient(deadline = "2s", fallback = slow_cache)]
async fn lookup() -> Result<u32, TimedError> {
    Err(TimedError::NotFound)
}

/// The fallback is the outermost layer: it runs after the call has ended, outside the deadline,
/// which bounds the attempts and their waits only (as MicroProfile Fault Tolerance's fallback
/// wraps its timeout). A fallback that must be quick bounds itself.
#[tokio::test(start_paused = true)]
async fn the_deadline_does_not_bound_the_fallback() {
    let start = tokio::time::Instant::now();
    let r = Registry::new().scope(lookup()).await;
    assert_eq!(r.unwrap(), 77);
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(10));
}
