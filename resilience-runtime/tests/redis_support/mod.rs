//! A real `redis-server` per test, on a free loopback port with a directory of its own, stopped
//! when the guard drops; and replicas (registries) applying a configuration that shares state on
//! it.

#![allow(dead_code)] // each test file uses its part

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::Registry;
use resilience_runtime::redis::RedisBackend;
use resilience_runtime::registry::RegistryConfig;

/// A running `redis-server`, killed (SIGKILL) and its directory removed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    password: Option<String>,
}

/// A port nobody listens on now: bound by the OS, read, and let go.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port(), None)
    }

    pub fn with_password(password: &str) -> RedisServer {
        RedisServer::start_on(free_port(), Some(password.to_owned()))
    }

    fn start_on(port: u16, password: Option<String>) -> RedisServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "resilience-redis-{}-{port}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(p) = &password {
            cmd.args(["--requirepass", p]);
        }
        let mut child = cmd
            .spawn()
            .expect("`redis-server` runs (`.ci/run` installs the Debian package)");
        // The server says when it is ready: wait for that line, not for time to pass.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .take(500)
            .map_while(Result::ok)
            .any(|l| l.contains("Ready to accept connections"));
        assert!(ready, "redis-server on port {port} did not start");
        // Keep reading its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        let server = RedisServer {
            child: Some(child),
            port,
            dir,
            password,
        };
        let pong: String = redis::cmd("PING").query(&mut server.connection()).unwrap();
        assert_eq!(pong, "PONG");
        server
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A plain connection for the test's own commands.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let again = RedisServer::start_on(self.port, self.password.clone());
        let old = std::mem::replace(self, again);
        drop(old);
    }

    /// Every key with its remaining lifetime in ms, sorted.
    pub fn keys(&self) -> Vec<(String, i64)> {
        let mut c = self.connection();
        let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut c).unwrap();
                (k, ttl)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A replica: a registry applying `tables` beside a `[backends.fleet]` on `server`, syncing
/// every 50 ms.
pub fn replica(server: &RedisServer, tables: &str) -> Registry {
    replica_with(
        server,
        "round_trip_limit = \"250ms\"\nsync_interval = \"50ms\"",
        tables,
    )
}

/// A replica with `settings` in its `[backends.fleet]` table.
pub fn replica_with(server: &RedisServer, settings: &str, tables: &str) -> Registry {
    let text = format!(
        "[backends.fleet]\nkind = \"redis\"\nurl = \"{}\"\n{settings}\n{tables}",
        server.url()
    );
    let r = Registry::new();
    r.apply(&RegistryConfig::from_toml_str(&text).unwrap());
    r
}

pub fn fleet(r: &Registry) -> RedisBackend {
    r.redis_backend("fleet").unwrap()
}

/// Waits for `n` syncs of `r`'s backend, at most 10 s.
pub async fn synced(r: &Registry, n: u64) {
    tokio::time::timeout(Duration::from_secs(10), fleet(r).wait_for_syncs(n))
        .await
        .expect("the backend syncs");
}

/// Waits, one sync of `r`'s backend at a time and for at most `syncs` of them, until `done`;
/// returns how many syncs that took.
pub async fn within_syncs(r: &Registry, syncs: u64, mut done: impl FnMut() -> bool) -> u64 {
    for n in 0..=syncs {
        if done() {
            return n;
        }
        synced(r, 1).await;
    }
    panic!("not done within {syncs} syncs");
}
