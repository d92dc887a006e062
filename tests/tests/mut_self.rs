//! `&mut self` methods are retried with a fresh reborrow per attempt (backon issue 49), and owned
//! arguments are cloned per attempt, each attempt owning its clones.

use std::sync::Arc;

use resilience_runtime::{CallContext, ConnectorError, Registry, resilient};

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Unavailable,
}

struct Session {
    attempts: Vec<u32>,
    sent: Vec<Vec<u8>>,
}

impl Session {
    #[resilient(retries = 3, idempotent, jitter = "none")]
    async fn send(&mut self, payload: Vec<u8>, log: &mut Vec<String>) -> Result<usize, ApiError> {
        let attempt = CallContext::current().map_or(0, |c| c.attempt());
        self.attempts.push(attempt);
        log.push(format!("attempt {attempt}"));
        if attempt < 2 {
            // Consumes this attempt's copy of the payload.
            drop(payload);
            return Err(ApiError::Unavailable);
        }
        self.sent.push(payload);
        Ok(self.sent.len())
    }

    #[resilient(retries = 1, idempotent)]
    async fn shared(self: Arc<Self>) -> Result<usize, ApiError> {
        Ok(self.sent.len())
    }
}

#[tokio::test(start_paused = true)]
async fn mut_self_is_reborrowed_per_attempt() {
    let mut session = Session {
        attempts: Vec::new(),
        sent: Vec::new(),
    };
    let mut log = Vec::new();
    let registry = Registry::new();
    let r = registry
        .scope(session.send(b"hello".to_vec(), &mut log))
        .await;
    assert_eq!(r.ok(), Some(1));
    assert_eq!(session.attempts, [0, 1, 2]);
    assert_eq!(session.sent, [b"hello".to_vec()]);
    assert_eq!(log, ["attempt 0", "attempt 1", "attempt 2"]);

    let session = Arc::new(session);
    assert_eq!(registry.scope(session.shared()).await.ok(), Some(1));
}

/// `Send` but not `Sync`, as a request that holds a `Cell` is.
#[derive(Clone, Debug, Default)]
struct Draft {
    edits: std::cell::Cell<u32>,
}

#[resilient(retries = 2, idempotent, jitter = "none")]
async fn save(draft: Draft, notes: &mut Vec<u32>) -> Result<u32, ApiError> {
    // Borrows its clone of the draft, across an await.
    draft.edits.set(draft.edits.get() + 1);
    tokio::task::yield_now().await;
    notes.push(draft.edits.get());
    if notes.len() < 2 {
        return Err(ApiError::Unavailable);
    }
    Ok(draft.edits.get())
}

/// The same draft, used only in a format string across an await.
#[resilient(retries = 2, idempotent)]
async fn describe(draft: Draft) -> Result<String, ApiError> {
    tokio::task::yield_now().await;
    Ok(format!("{draft:?}"))
}

/// The same draft at a site that runs its body once.
#[resilient]
async fn proofread(draft: Draft) -> Result<u32, ApiError> {
    draft.edits.set(draft.edits.get() + 1);
    tokio::task::yield_now().await;
    Ok(draft.edits.get())
}

/// `Send`, not `Sync`, with a `&mut self` method that only reads through `self`.
struct Counter {
    hits: std::cell::Cell<u32>,
}

impl Counter {
    #[resilient(retries = 2, idempotent)]
    async fn tick(&mut self) -> Result<u32, ApiError> {
        self.hits.set(self.hits.get() + 1);
        tokio::task::yield_now().await;
        if self.hits.get() < 2 {
            return Err(ApiError::Unavailable);
        }
        Ok(self.hits.get())
    }
}

fn send<F: Send>(f: F) -> F {
    f
}

#[tokio::test(start_paused = true)]
async fn a_call_is_send_when_its_arguments_are_even_if_they_are_not_sync() {
    let mut notes = Vec::new();
    // Compiles only if the call's future is `Send`: an attempt that borrowed the draft would need
    // `Draft: Sync`.
    let call = send(save(Draft::default(), &mut notes));
    assert_eq!(Registry::new().scope(call).await.ok(), Some(1));
    // Each attempt edited its own clone of the untouched original.
    assert_eq!(notes, [1, 1]);
    // A format string's `{draft:?}` is a use like any other: the attempt owns a clone.
    let call = send(describe(Draft::default()));
    let described = Registry::new().scope(call).await.ok();
    assert_eq!(
        described.as_deref(),
        Some("Draft { edits: Cell { value: 0 } }")
    );
    // A site without retries moves its arguments into its one attempt as well.
    let call = send(proofread(Draft::default()));
    assert_eq!(Registry::new().scope(call).await.ok(), Some(1));
    // `&mut self` on a `Send`, not `Sync`, type: the call is `Send`, as the plain method is.
    let mut counter = Counter {
        hits: std::cell::Cell::new(0),
    };
    let call = send(counter.tick());
    assert_eq!(Registry::new().scope(call).await.ok(), Some(2));
}
