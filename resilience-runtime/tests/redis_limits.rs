//! Rate limits shared on Redis: GCRA on the server, its clock driven by the test where a rate is
//! asserted.
#![cfg(feature = "redis")]

mod redis_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis_support::{RedisServer, replica, synced};
use resilience_runtime::limit::{Gcra, RateLimit};
use resilience_runtime::redis::{RedisBackend, RedisConfig, RedisRateLimit};
use resilience_runtime::registry::BackendState;
use resilience_runtime::store::Permit;
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

const R: u32 = 5;
const PER: Duration = Duration::from_secs(1);

/// A backend on `server` whose round trips may take 250 ms.
async fn backend(server: &RedisServer) -> RedisBackend {
    let b = RedisBackend::new(
        RedisConfig::new(server.url())
            .unwrap()
            .with_round_trip_limit(Duration::from_millis(250))
            .with_sync_interval(Duration::from_millis(50)),
    );
    b.start();
    tokio::time::timeout(Duration::from_secs(10), b.wait_for_syncs(1))
        .await
        .unwrap();
    b
}

/// The test's clock, in µs, that the scripts decide on.
fn clock(now: &Arc<AtomicU64>) -> impl Fn() -> Duration + Send + Sync + 'static {
    let now = now.clone();
    move || Duration::from_micros(now.load(Ordering::SeqCst))
}

/// Whether `l` grants a permit for `key` now, waiting for its round trip.
async fn granted(l: &dyn RateLimit, key: Option<&str>) -> bool {
    match l.acquire(key) {
        Permit::Granted => true,
        Permit::Ask(round_trip) => round_trip.await.is_ok(),
        _ => false,
    }
}

/// Permits granted out of `tries` asked of `limiters` in turn.
async fn grants(limiters: &[&dyn RateLimit], tries: usize, key: Option<&str>) -> usize {
    let mut n = 0;
    for i in 0..tries {
        if granted(limiters[i % limiters.len()], key).await {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_limit_of_r_per_period_where_two_in_process_limiters_grant_2r() {
    let server = RedisServer::start();
    let now = Arc::new(AtomicU64::new(1_000_000_000));
    let (a, b) = (backend(&server).await, backend(&server).await);
    let la = a.rate_limit("graph", R, PER).with_clock(clock(&now));
    let lb = b.rate_limit("graph", R, PER).with_clock(clock(&now));
    let both: [&dyn RateLimit; 2] = [&la, &lb];
    // At one instant: the burst of R, for the two together.
    assert_eq!(grants(&both, 4 * R as usize, None).await, R as usize);
    // A full period later: R again, no more.
    now.fetch_add(PER.as_micros() as u64, Ordering::SeqCst);
    assert_eq!(grants(&both, 4 * R as usize, None).await, R as usize);
    // One emission interval later: one.
    now.fetch_add((PER / R).as_micros() as u64, Ordering::SeqCst);
    assert_eq!(grants(&both, 4 * R as usize, None).await, 1);
    // Two in-process limiters of the same rate grant 2R at one instant.
    let (ga, gb) = (Gcra::new(R, PER), Gcra::new(R, PER));
    let local: [&dyn RateLimit; 2] = [&ga, &gb];
    assert_eq!(grants(&local, 4 * R as usize, None).await, 2 * R as usize);
    assert_eq!(a.errors_total() + b.errors_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_says_how_long_until_the_next_permit_on_the_scripts_clock() {
    let server = RedisServer::start();
    let now = Arc::new(AtomicU64::new(5_000_000));
    let a = backend(&server).await;
    let l = a.rate_limit("paced", R, PER).with_clock(clock(&now));
    assert_eq!(grants(&[&l], R as usize, None).await, R as usize);
    now.fetch_add(50_000, Ordering::SeqCst);
    let Permit::Ask(round_trip) = l.acquire(None) else {
        panic!("a shared permit is asked for");
    };
    assert_eq!(round_trip.await, Err(Duration::from_millis(150)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_takes_several_permits_per_round_trip_within_the_fleets_quota() {
    let server = RedisServer::start();
    let now = Arc::new(AtomicU64::new(1_000_000_000));
    let (a, b) = (backend(&server).await, backend(&server).await);
    let la = a
        .rate_limit("leased", 6, PER)
        .with_lease(3)
        .with_clock(clock(&now));
    let lb = b
        .rate_limit("leased", 6, PER)
        .with_lease(3)
        .with_clock(clock(&now));
    // The first permit of each replica is a round trip that leases 3; the next two are local.
    let Permit::Ask(round_trip) = la.acquire(None) else {
        panic!("the first permit is asked for");
    };
    assert_eq!(round_trip.await, Ok(()));
    for _ in 0..2 {
        assert!(matches!(la.acquire(None), Permit::Granted));
    }
    assert!(granted(&lb, None).await);
    for _ in 0..2 {
        assert!(matches!(lb.acquire(None), Permit::Granted));
    }
    // The fleet's 6 are spent.
    assert_eq!(grants(&[&la, &lb], 10, None).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_limits_give_each_tenant_its_quota_and_store_tenants_as_hashes() {
    let server = RedisServer::start();
    let now = Arc::new(AtomicU64::new(1_000_000_000));
    let (a, b) = (backend(&server).await, backend(&server).await);
    let la = a
        .rate_limit("okta", 2, PER)
        .per_key(true)
        .with_clock(clock(&now));
    let lb = b
        .rate_limit("okta", 2, PER)
        .per_key(true)
        .with_clock(clock(&now));
    let both: [&dyn RateLimit; 2] = [&la, &lb];
    assert_eq!(grants(&both, 6, Some("acme")).await, 2);
    assert_eq!(grants(&both, 6, Some("globex")).await, 2);
    let keys = server.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for (k, ttl) in &keys {
        assert!(k.starts_with("resilience:{rl:okta/key#"), "{k}");
        assert!(!k.contains("acme") && !k.contains("globex"), "{k}");
        // The backlog (one period) plus one more period.
        assert!(*ttl > 0 && *ttl <= 2_001, "{k}: {ttl}");
    }
}

#[resilient(rate_limit = "configured", deadline = "50ms")]
async fn limited() -> Result<u32, ApiError> {
    Ok(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_limit_on_a_backend_is_shared_by_every_replica() {
    let server = RedisServer::start();
    let tables = "[rate_limits.configured]\nrate = 3\nper = \"1h\"\nbackend = \"fleet\"\n";
    let (a, b) = (replica(&server, tables), replica(&server, tables));
    synced(&a, 1).await;
    synced(&b, 1).await;
    let mut ok = 0;
    let mut limited_calls = 0;
    for i in 0..6 {
        let r = if i % 2 == 0 { &a } else { &b };
        match r.scope(limited()).await {
            Ok(1) => ok += 1,
            Err(ApiError::Rejected(Rejected::RateLimited { .. })) => limited_calls += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((ok, limited_calls), (3, 3));
    let m = |r: &Registry| r.metrics().site("limited").unwrap().metrics.clone();
    assert_eq!(m(&a).rate_limit_allowed + m(&b).rate_limit_allowed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_error_answers_from_the_local_limiter_counts_it_and_rejoins() {
    let server = RedisServer::start();
    let a = backend(&server).await;
    let l: RedisRateLimit = a.rate_limit("broken", 1, Duration::from_secs(3600));
    // A key the script cannot read: the server answers with an error.
    let mut c = server.connection();
    let _: () = redis::cmd("SET")
        .arg("resilience:{rl:broken}")
        .arg("not a time")
        .query(&mut c)
        .unwrap();
    let Permit::Ask(round_trip) = l.acquire(None) else {
        panic!("asked while sharing");
    };
    assert_eq!(round_trip.await, Ok(()), "the local limiter's first permit");
    assert_eq!(a.state(), BackendState::Fallback);
    assert_eq!((a.errors_total(), a.fallbacks_total()), (1, 1));
    // In fallback the local limiter answers at once, with no round trip: its burst of 1 is spent.
    assert!(matches!(l.acquire(None), Permit::Refused(_)));
    // The next sync reaches the server: sharing again.
    let _: () = redis::cmd("DEL")
        .arg("resilience:{rl:broken}")
        .query(&mut c)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.wait_for_syncs(1))
        .await
        .unwrap();
    assert_eq!(a.state(), BackendState::Shared);
    assert!(granted(&l, None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_over_its_limit_is_answered_locally_when_the_limit_expires() {
    let server = RedisServer::start();
    let a = backend(&server).await;
    let l = a.rate_limit("slow", 10, PER);
    // The server stops answering every client for 2 s.
    let mut c = server.connection();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query(&mut c)
        .unwrap();
    let Permit::Ask(round_trip) = l.acquire(None) else {
        panic!("asked while sharing");
    };
    let start = Instant::now();
    assert_eq!(round_trip.await, Ok(()), "the local limiter answered");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(750),
        "{waited:?}"
    );
    assert_eq!(a.state(), BackendState::Fallback);
    assert!(a.errors_total() >= 1);
    let health = fleet_health(&a);
    assert!(health.backend_fallback);
    // Once the pause is over, a sync reaches the server.
    tokio::time::timeout(Duration::from_secs(10), a.wait_for_syncs(1))
        .await
        .unwrap();
    assert_eq!(a.state(), BackendState::Shared);
}

fn fleet_health(b: &RedisBackend) -> resilience_runtime::registry::BackendHealth {
    let r = Registry::new();
    r.add_backend("fleet", Arc::new(b.clone()));
    r.health().backends.remove(0)
}

#[resilient(rate_limit = "blocking_shared")]
fn blocking_limited() -> Result<u32, ApiError> {
    Ok(2)
}

#[test]
fn a_blocking_call_outside_any_runtime_asks_on_the_backends_runtime() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let now = Arc::new(AtomicU64::new(1_000_000_000));
    let a = rt.block_on(backend(&server));
    let registry = Registry::new();
    let limit = a
        .rate_limit("blocking_shared", 1, Duration::from_secs(3600))
        .with_clock(clock(&now));
    registry.set_rate_limit("blocking_shared", Arc::new(limit));
    // This thread is in no runtime: the round trip runs on the backend's.
    assert_eq!(registry.enter(blocking_limited).unwrap(), 2);
    assert!(matches!(
        registry.enter(blocking_limited),
        Err(ApiError::Rejected(Rejected::RateLimited { .. }))
    ));
    assert_eq!(a.errors_total(), 0);
}

/// `l`'s answer now, waiting for its round trip: `Ok` or the wait until a permit.
async fn answer(l: &dyn RateLimit, key: Option<&str>) -> Result<(), Duration> {
    match l.acquire(key) {
        Permit::Granted => Ok(()),
        Permit::Refused(wait) => Err(wait),
        Permit::Ask(round_trip) => round_trip.await,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_hint_on_one_replica_pauses_the_limit_for_the_whole_fleet() {
    let server = RedisServer::start();
    let now = Arc::new(AtomicU64::new(9_000_000));
    let (a, b) = (backend(&server).await, backend(&server).await);
    // A high rate (one permit per ms): only a pause refuses here.
    let la = a.rate_limit("paused", 1000, PER).with_clock(clock(&now));
    let lb = b.rate_limit("paused", 1000, PER).with_clock(clock(&now));
    assert_eq!(answer(&la, None).await, Ok(()));
    assert_eq!(answer(&lb, None).await, Ok(()));
    let hint = Duration::from_secs(3);
    la.pause(None, hint);
    // The replica that saw the hint refuses at once, without a round trip.
    let Permit::Refused(wait) = la.acquire(None) else {
        panic!("the paused replica refuses at once");
    };
    assert!(
        wait > Duration::from_millis(2900) && wait <= hint,
        "{wait:?}"
    );
    // The other replica is refused as soon as the pause's round trip has landed, until the
    // hint passes on the scripts' clock (frozen here, so the wait is the whole hint).
    let mut refused = None;
    for _ in 0..2_000 {
        if let Err(wait) = answer(&lb, None).await {
            refused = Some(wait);
            break;
        }
    }
    assert_eq!(refused, Some(hint), "the fleet waits out the hint");
    now.fetch_add(hint.as_micros() as u64, Ordering::SeqCst);
    assert_eq!(answer(&lb, None).await, Ok(()));
    assert_eq!(a.errors_total() + b.errors_total(), 0);
}
