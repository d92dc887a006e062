//! Redis trouble never takes the connector down: calls go on with local state within the round
//! trip limit, health shows the fallback, and sharing resumes when Redis is back. Secrets in the
//! URL never show.
#![cfg(feature = "redis")]

mod redis_support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_support::{RedisServer, fleet, replica_with, synced, within_syncs};
use resilience_runtime::breaker::{BreakerState, Outcome};
use resilience_runtime::redis::{RedisBackend, RedisConfig};
use resilience_runtime::registry::BackendState;
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient};

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

#[resilient(breaker = "outage", rate_limit = "outage")]
async fn work() -> Result<u32, ApiError> {
    Ok(3)
}

const SETTINGS: &str = "round_trip_limit = \"100ms\"\nsync_interval = \"50ms\"";
const TABLES: &str = "[breakers.outage]\nfailure_threshold = 1\ncooldown = \"1h\"\nbackend = \"fleet\"\n[rate_limits.outage]\nrate = 100000\nper = \"1s\"\nbackend = \"fleet\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_calls_go_on_locally_and_sharing_resumes_after_a_restart() {
    let mut server = RedisServer::start();
    let (a, b) = (
        replica_with(&server, SETTINGS, TABLES),
        replica_with(&server, SETTINGS, TABLES),
    );
    synced(&a, 1).await;
    synced(&b, 1).await;
    for r in [&a, &b] {
        assert_eq!(r.scope(work()).await.unwrap(), 3);
    }
    server.kill();
    // Every call goes on, none waiting for Redis longer than the round trip limit.
    let mut slowest = Duration::ZERO;
    for i in 0..40 {
        let r = if i % 2 == 0 { &a } else { &b };
        let start = Instant::now();
        assert_eq!(r.scope(work()).await.unwrap(), 3);
        slowest = slowest.max(start.elapsed());
    }
    assert!(slowest < Duration::from_millis(100 + 100), "{slowest:?}");
    for r in [&a, &b] {
        let h = r.health();
        let fleet_health = &h.backends[0];
        assert_eq!(
            (fleet_health.name.as_str(), fleet_health.state),
            ("fleet", BackendState::Fallback)
        );
        assert!(fleet_health.backend_fallback && fleet_health.backend_errors_total >= 1);
        assert_eq!(fleet_health.fallbacks_total, 1);
        assert!(
            h.healthy,
            "a fallback alone does not make the replica unhealthy"
        );
        #[cfg(feature = "prometheus")]
        {
            let text = resilience_runtime::prometheus::encode(r).unwrap();
            assert!(
                text.contains("backend_fallback{backend=\"fleet\"} 1"),
                "{text}"
            );
            let errors = format!(
                "backend_errors_total{{backend=\"fleet\"}} {}",
                r.health().backends[0].backend_errors_total
            );
            assert!(text.contains(&errors), "{text}");
        }
    }
    // The local breaker decides meanwhile: a's trip is a's alone.
    let ba = a.breaker("outage");
    ba.record(ba.acquire().unwrap(), Outcome::Failure);
    assert_eq!(b.breaker("outage").state(), BreakerState::Closed);
    ba.reset();
    // Redis is back (empty): both rejoin at their next sync, and share again.
    server.restart();
    synced(&a, 1).await;
    synced(&b, 1).await;
    assert_eq!(fleet(&a).state(), BackendState::Shared);
    assert!(!a.health().backends[0].backend_fallback);
    ba.record(ba.acquire().unwrap(), Outcome::Failure);
    within_syncs(&b, 4, || b.breaker("outage").state() == BreakerState::Open).await;
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_password_in_the_url_shows_nowhere() {
    let mut server = RedisServer::with_password("s3cret-pw");
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let a = replica_with(&server, SETTINGS, TABLES);
    synced(&a, 1).await;
    assert_eq!(a.scope(work()).await.unwrap(), 3);
    server.kill();
    assert_eq!(a.scope(work()).await.unwrap(), 3);
    assert_eq!(fleet(&a).state(), BackendState::Fallback);
    let shown = format!("redis://:[redacted]@127.0.0.1:{}", server.port);
    let health = serde_json::to_string(&a.health()).unwrap();
    let debug = format!("{:?} {:?}", fleet(&a), fleet(&a).config());
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("redis backend unreachable or slow"), "{logs}");
    for (what, text) in [("health", &health), ("debug", &debug), ("logs", &logs)] {
        assert!(text.contains(&shown), "{what}: {text}");
        assert!(!text.contains("s3cret-pw"), "{what}: {text}");
    }
    let err = RedisConfig::new("redis://:s3cret-pw@127.0.0.1:notaport").unwrap_err();
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    assert!(err.to_string().contains(":[redacted]@"), "{err}");
    let err = resilience_runtime::registry::RegistryConfig::from_toml_str(
        "[backends.fleet]\nkind = \"redis\"\nurl = \"redis://:s3cret-pw@[::1\"",
    )
    .unwrap_err();
    assert_eq!(err.field(), "backends.fleet.url");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}

#[test]
fn a_backend_whose_runtime_ended_starts_again_on_the_next() {
    let server = RedisServer::start();
    let backend = RedisBackend::new(
        RedisConfig::new(server.url())
            .unwrap()
            .with_round_trip_limit(Duration::from_millis(250))
            .with_sync_interval(Duration::from_millis(50)),
    );
    let registry = Registry::new();
    let first = tokio::runtime::Runtime::new().unwrap();
    first.block_on(async {
        backend.start();
        tokio::time::timeout(Duration::from_secs(10), backend.wait_for_syncs(1))
            .await
            .unwrap();
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        // A use of an instance it serves starts it on this runtime.
        backend.attach_breaker(&registry.breaker("restarted"), 1);
        tokio::time::timeout(Duration::from_secs(10), backend.wait_for_syncs(2))
            .await
            .unwrap();
    });
    assert_eq!(backend.state(), BackendState::Shared);
    assert_eq!(backend.errors_total(), 0);
}
