//! An auth error with `refresh` refreshes the credentials once and retries once.

use std::sync::atomic::{AtomicU32, Ordering};

use resilience_runtime::{ConnectorError, Registry, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(auth)]
    Unauthorized,
}

#[derive(Default)]
struct Client {
    token: u32,
    refreshes: AtomicU32,
    runs: AtomicU32,
}

impl Client {
    async fn refresh_token(&mut self) -> Result<(), ApiError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.token += 1;
        Ok(())
    }

    /// Not idempotent and no retries: the auth retry happens anyway, once.
    #[resilient(refresh = Self::refresh_token)]
    async fn whoami(&mut self, valid_token: u32) -> Result<u32, ApiError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if self.token == valid_token {
            Ok(self.token)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_auth_error_refreshes_once_and_retries_once() {
    let mut client = Client::default();
    let r = Registry::new().scope(client.whoami(1)).await;
    assert_eq!(r.ok(), Some(1));
    assert_eq!(client.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(client.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_second_auth_error_is_returned_without_another_refresh() {
    let mut client = Client::default();
    let r = Registry::new().scope(client.whoami(7)).await;
    assert!(matches!(r, Err(ApiError::Unauthorized)));
    assert_eq!(client.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(client.runs.load(Ordering::SeqCst), 2);
}

#[derive(Debug, ConnectorError)]
enum TokenError {
    #[connector(auth)]
    Unauthorized,
    #[connector(permanent)]
    TokenEndpointDown,
}

struct Broken {
    runs: AtomicU32,
}

impl Broken {
    async fn refresh_token(&self) -> Result<(), TokenError> {
        Err(TokenError::TokenEndpointDown)
    }

    #[resilient(retries = 2, idempotent, refresh = Self::refresh_token)]
    async fn whoami(&self) -> Result<u32, TokenError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Err(TokenError::Unauthorized)
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_ends_the_call_with_the_refresh_error() {
    let client = Broken {
        runs: AtomicU32::new(0),
    };
    let registry = Registry::new();
    let r = registry.scope(client.whoami()).await;
    assert!(matches!(r, Err(TokenError::TokenEndpointDown)), "{r:?}");
    assert_eq!(
        client.runs.load(Ordering::SeqCst),
        1,
        "no attempt after a failed refresh"
    );
    let m = registry.metrics();
    let s = &m.site("whoami").unwrap().metrics;
    assert_eq!((s.refreshes, s.errors.permanent, s.ok), (1, 1, 0));
}

#[derive(Debug, ConnectorError)]
enum GraphError {
    #[connector(auth)]
    Unauthorized,
    #[connector(transient)]
    Throttled,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

/// Answers each attempt from a script, and counts refreshes.
struct Scripted {
    script: std::sync::Mutex<std::collections::VecDeque<Result<u32, GraphError>>>,
    runs: AtomicU32,
    refreshes: AtomicU32,
    hang_in_refresh: bool,
}

impl Scripted {
    fn new(script: Vec<Result<u32, GraphError>>) -> Scripted {
        Scripted {
            script: std::sync::Mutex::new(script.into()),
            runs: AtomicU32::new(0),
            refreshes: AtomicU32::new(0),
            hang_in_refresh: false,
        }
    }

    async fn refresh_token(&self) -> Result<(), GraphError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        if self.hang_in_refresh {
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    fn next(&self) -> Result<u32, GraphError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Err(GraphError::Unauthorized))
    }

    #[resilient(retries = 5, idempotent, jitter = "none", refresh = Self::refresh_token)]
    async fn list(&self) -> Result<u32, GraphError> {
        self.next()
    }

    #[resilient(retries = 2, idempotent, jitter = "none", refresh = Self::refresh_token)]
    async fn list_twice(&self) -> Result<u32, GraphError> {
        self.next()
    }

    #[resilient(deadline = "5s", refresh = Self::refresh_token)]
    async fn list_by_deadline(&self) -> Result<u32, GraphError> {
        self.next()
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_that_expires_twice_within_one_call_is_refreshed_twice() {
    use GraphError::*;
    // 401, refresh, 429, 401 on the refreshed token once it expired too, refresh, 200.
    let client = Scripted::new(vec![
        Err(Unauthorized),
        Err(Throttled),
        Err(Unauthorized),
        Ok(3),
    ]);
    let registry = Registry::new();
    assert_eq!(registry.scope(client.list()).await.unwrap(), 3);
    assert_eq!(client.refreshes.load(Ordering::SeqCst), 2);
    assert_eq!(client.runs.load(Ordering::SeqCst), 4);
    let m = registry.metrics();
    let s = &m.site("list").unwrap().metrics;
    assert_eq!(
        (s.ok, s.refreshes, s.retries),
        (1, 2, 1),
        "a refresh spends no retry"
    );
}

#[tokio::test(start_paused = true)]
async fn refreshes_stop_after_one_per_attempt_the_policy_allows() {
    // Every attempt refused: `retries = 2` allows three attempts' worth of refreshes.
    let client = Scripted::new(vec![]);
    let registry = Registry::new();
    let r = registry.scope(client.list_twice()).await;
    assert!(matches!(r, Err(GraphError::Unauthorized)), "{r:?}");
    assert_eq!(client.refreshes.load(Ordering::SeqCst), 3);
    assert_eq!(client.runs.load(Ordering::SeqCst), 4);
    let m = registry.metrics();
    let s = &m.site("list_twice").unwrap().metrics;
    assert_eq!((s.errors.auth, s.refreshes, s.retries), (1, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_a_refresh_that_hangs() {
    let mut client = Scripted::new(vec![Err(GraphError::Unauthorized)]);
    client.hang_in_refresh = true;
    let start = tokio::time::Instant::now();
    let r = Registry::new().scope(client.list_by_deadline()).await;
    assert!(
        matches!(
            r,
            Err(GraphError::Rejected(
                resilience_runtime::Rejected::DeadlineExceeded { .. }
            ))
        ),
        "{r:?}"
    );
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
    assert_eq!(client.runs.load(Ordering::SeqCst), 1);
}
