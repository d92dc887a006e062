//! Breaker state shared on Redis: an opening reaches every replica within a sync interval, probes
//! are leased fleet-wide, and a quorum guards the fleet from one misbehaving replica.
#![cfg(feature = "redis")]

mod redis_support;

use std::sync::atomic::{AtomicU32, Ordering};

use redis_support::{RedisServer, fleet, replica, synced, within_syncs};
use resilience_runtime::breaker::{BreakerState, Outcome};
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error("busy")]
    #[connector(transient)]
    Busy,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(breaker = "shared")]
async fn call(fail: bool) -> Result<u32, ApiError> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    if fail { Err(ApiError::Busy) } else { Ok(7) }
}

const ONE_FAILURE: &str =
    "[breakers.shared]\nfailure_threshold = 1\ncooldown = \"1h\"\nbackend = \"fleet\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_on_one_replica_refuses_on_another_within_the_sync_interval() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, ONE_FAILURE), replica(&server, ONE_FAILURE));
    synced(&a, 1).await;
    synced(&b, 1).await;
    assert_eq!(b.scope(call(false)).await.unwrap(), 7);
    assert!(matches!(a.scope(call(true)).await, Err(ApiError::Busy)));
    assert_eq!(a.breaker("shared").state(), BreakerState::Open);
    // b follows at its next syncs: the publication, then one read (50 ms each).
    let syncs = within_syncs(&b, 3, || b.breaker("shared").state() == BreakerState::Open).await;
    assert!(syncs <= 2, "{syncs} syncs");
    let runs = RUNS.load(Ordering::SeqCst);
    let r = b.scope(call(false)).await;
    assert!(
        matches!(r, Err(ApiError::Rejected(Rejected::CircuitOpen { .. }))),
        "{r:?}"
    );
    assert_eq!(
        RUNS.load(Ordering::SeqCst),
        runs,
        "b refused without an attempt"
    );
    assert_eq!(b.breaker("shared").opened_total(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_quorum_two_one_replica_alone_does_not_open_it_for_the_fleet() {
    let server = RedisServer::start();
    let tables = "[breakers.quorum]\nfailure_threshold = 1\ncooldown = \"1h\"\nbackend = \"fleet\"\nquorum = 2\n";
    let replicas = [
        replica(&server, tables),
        replica(&server, tables),
        replica(&server, tables),
    ];
    let [a, b, c] = &replicas;
    for r in &replicas {
        synced(r, 1).await;
    }
    let trip = |r: &Registry| {
        let br = r.breaker("quorum");
        br.record(br.acquire().unwrap(), Outcome::Failure);
        assert_eq!(br.state(), BreakerState::Open);
    };
    trip(a);
    // Four syncs of c after the trip: the publication and reads; c stays closed.
    synced(c, 4).await;
    assert_eq!(b.breaker("quorum").state(), BreakerState::Closed);
    assert_eq!(c.breaker("quorum").state(), BreakerState::Closed);
    // A second replica trips it: the quorum is met, and c follows.
    trip(b);
    within_syncs(c, 4, || c.breaker("quorum").state() == BreakerState::Open).await;
    assert_eq!(c.breaker("quorum").opened_total(), 1);
}

const PROBES: &str = "[breakers.probed]\nfailure_threshold = 1\ncooldown = \"200ms\"\nhalf_open_probes = 1\nbackend = \"fleet\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_in_flight_fleet_wide_never_exceed_the_setting() {
    let server = RedisServer::start();
    let replicas = [
        replica(&server, PROBES),
        replica(&server, PROBES),
        replica(&server, PROBES),
    ];
    for r in &replicas {
        synced(r, 1).await;
    }
    let breakers: Vec<_> = replicas.iter().map(|r| r.breaker("probed")).collect();
    for b in &breakers {
        b.record(b.acquire().unwrap(), Outcome::Failure);
    }
    // Every replica asks for a probe at every sync of the first, for 20 syncs (1 s: five
    // cooldowns), and keeps what it gets.
    let mut probes = Vec::new();
    let mut most = 0;
    for _ in 0..20 {
        for b in &breakers {
            if let Ok(t) = b.acquire() {
                assert!(t.is_probe());
                probes.push((b.clone(), t));
            }
        }
        let in_flight: u64 = breakers.iter().map(|b| b.probes_in_flight()).sum();
        assert!(in_flight <= 1, "{in_flight} probes in flight");
        most = most.max(in_flight);
        synced(&replicas[0], 1).await;
    }
    assert_eq!(
        (most, probes.len()),
        (1, 1),
        "one probe, held by one replica"
    );
    // It succeeds: the fleet's breaker closes, and the slot is free for the others' probes.
    let (prober, ticket) = probes.pop().unwrap();
    prober.record(ticket, Outcome::Success);
    assert_eq!(prober.state(), BreakerState::Closed);
    let others: Vec<_> = breakers
        .iter()
        .filter(|b| !std::sync::Arc::ptr_eq(b, &prober))
        .cloned()
        .collect();
    within_syncs(&replicas[0], 20, || {
        for b in &others {
            if let Ok(t) = b.acquire() {
                b.record(t, Outcome::Success);
            }
        }
        others.iter().all(|b| b.state() == BreakerState::Closed)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_lease_expires_when_its_owner_vanishes() {
    let server = RedisServer::start();
    let (a, b) = (replica(&server, PROBES), replica(&server, PROBES));
    synced(&a, 1).await;
    synced(&b, 1).await;
    let (ba, bb) = (a.breaker("probed"), b.breaker("probed"));
    ba.record(ba.acquire().unwrap(), Outcome::Failure);
    bb.record(bb.acquire().unwrap(), Outcome::Failure);
    // a takes the fleet's probe (once its cooldown is over and its lease granted).
    within_syncs(&a, 40, || ba.acquire().is_ok()).await;
    assert_eq!(ba.probes_in_flight(), 1);
    // b is refused while a holds it: a renews its lease at every sync.
    synced(&a, 8).await;
    assert!(bb.acquire().is_err());
    assert_eq!(bb.state(), BreakerState::Open);
    // a dies while probing: its registry, breaker and backend are gone, its lease unrenewed.
    let lease = fleet(&a).config().sync_interval() * 3;
    drop((a, ba));
    // b gets the probe once the lease expires (150 ms: three syncs of b, give or take two).
    let syncs = within_syncs(&b, 20, || bb.acquire().is_ok()).await;
    assert!(
        (1..=6).contains(&syncs),
        "{syncs} syncs for a lease of {lease:?}"
    );
    assert_eq!(bb.state(), BreakerState::HalfOpen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_prefix_with_a_ttl_and_sensitive_keys_only_as_their_hash() {
    let server = RedisServer::start();
    let tables = "[breakers.okta]\nfailure_threshold = 1\ncooldown = \"1h\"\nsensitive_keys = true\nbackend = \"fleet\"\n";
    let settings =
        "round_trip_limit = \"250ms\"\nsync_interval = \"50ms\"\nkey_prefix = \"okta-connector:\"";
    let a = redis_support::replica_with(&server, settings, tables);
    synced(&a, 1).await;
    let b = a.keyed_breakers("okta").get("api-key-s3cret");
    b.record(b.acquire().unwrap(), Outcome::Failure);
    synced(&a, 2).await;
    let keys = server.keys();
    let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "okta-connector:{b:okta}:open",
            "okta-connector:{b:okta}:trips:key:key#a0b2d1d4a3a8a8b8",
        ]
        .map(|k| k.replace(
            "key#a0b2d1d4a3a8a8b8",
            &resilience_runtime::redact::redacted_key("okta", "api-key-s3cret")
        ))
    );
    for (k, ttl) in &keys {
        assert!(!k.contains("s3cret"), "{k}");
        assert!(*ttl > 0 && *ttl <= 3_600_000, "{k}: {ttl}");
    }
}

#[test]
fn a_publication_that_finds_the_queue_full_is_dropped_and_counted() {
    // No runtime: the backend's task never starts, so nothing empties its queue.
    let backend = resilience_runtime::redis::RedisBackend::new(
        resilience_runtime::redis::RedisConfig::new("redis://127.0.0.1:1").unwrap(),
    );
    let b = std::sync::Arc::new(resilience_runtime::breaker::Breaker::new(
        "queued",
        resilience_runtime::breaker::BreakerConfig::new().with_failure_threshold(1),
    ));
    backend.attach_breaker(&b, 1);
    for _ in 0..1025 {
        b.record(b.acquire().unwrap(), Outcome::Failure);
        b.reset();
    }
    assert_eq!(b.opened_total(), 1025);
    assert_eq!(backend.errors_total(), 1, "the queue holds 1024");
}
