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
