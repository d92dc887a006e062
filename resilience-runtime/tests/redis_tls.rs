//! A backend on a `rediss://` URL: a real `redis-server` listening on TLS only, with a
//! self-signed certificate made here, and a password that no output shows.
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use resilience_runtime::limit::RateLimit;
use resilience_runtime::redis::{RedisBackend, RedisConfig};
use resilience_runtime::store::Permit;

/// `redis-server` on TLS only, killed and its directory removed on drop.
struct TlsServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl TlsServer {
    fn start(password: &str) -> TlsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("resilience-redis-tls-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--tls-cert-file")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key-file")
            .arg(dir.join("key.pem"))
            .arg("--tls-ca-cert-file")
            .arg(dir.join("cert.pem"))
            .args(["--tls-auth-clients", "no", "--requirepass", password])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("`redis-server` runs (`.ci/run` installs the Debian package)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .take(500)
            .map_while(Result::ok)
            .any(|l| l.contains("Ready to accept connections"));
        assert!(ready, "redis-server with TLS on port {port} did not start");
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        TlsServer { child, port, dir }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rediss_url_shares_state_over_tls_and_never_shows_its_password() {
    // rustls is built without a default crypto provider here: the test names its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let password = "tls-secret-7f3a";
    let server = TlsServer::start(password);
    let url = format!("rediss://:{password}@127.0.0.1:{}/#insecure", server.port);
    let config = RedisConfig::new(url)
        .unwrap()
        .with_round_trip_limit(Duration::from_secs(2))
        .with_sync_interval(Duration::from_millis(50));
    let shown = format!("{config:?}");
    assert!(!shown.contains(password), "{shown}");
    let backend = RedisBackend::new(config);
    backend.start();
    tokio::time::timeout(Duration::from_secs(10), backend.wait_for_syncs(2))
        .await
        .expect("the backend syncs over TLS");
    // A shared permit is decided by the server, over TLS: 2 per hour, then refused.
    let limit = backend.rate_limit("tls", 2, Duration::from_secs(3600));
    let mut granted = 0;
    for _ in 0..4 {
        match limit.acquire(None) {
            Permit::Ask(round_trip) => {
                if round_trip.await.is_ok() {
                    granted += 1;
                }
            }
            other => panic!("a shared permit is asked of the server: {other:?}"),
        }
    }
    assert_eq!(granted, 2);
    assert_eq!(backend.errors_total(), 0);
    let shown = format!("{backend:?} {limit:?}");
    assert!(!shown.contains(password), "{shown}");
}
