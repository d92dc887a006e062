//! Scoping: which registry is in force, and which per-call policy override. A scope is per
//! thread and per poll (a thread-local set for the length of a poll or of a blocking closure):
//! nothing process-wide changes, so one test's scope never reaches another test's thread, and a
//! thread in no scope pays one thread-local read. A call in a scope takes the engine's full path.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::Registry;
use super::site_policy::{Layer, PolicyOverride};
use crate::InvalidConfig;

thread_local! {
    static SCOPED: RefCell<Option<Registry>> = const { RefCell::new(None) };
    /// The per-call override in force ([`with_policy`]), inner values over outer ones.
    static OVERRIDE: RefCell<Option<Arc<Layer>>> = const { RefCell::new(None) };
}

impl Registry {
    /// The registry in force here: the one of the innermost [`Registry::scope`] or
    /// [`Registry::enter`], else the global one.
    pub fn current() -> Registry {
        scoped().unwrap_or_else(|| Registry::global().clone())
    }

    /// Runs `fut` with this registry in force for every resilient call it makes.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let r = Registry::new();
    /// let same = r.scope(async { Registry::current() }).await;
    /// assert!(same.ptr_eq(&r));
    /// # }
    /// ```
    pub fn scope<F: Future>(&self, fut: F) -> Scoped<F> {
        Scoped {
            registry: self.clone(),
            fut: Box::pin(fut),
        }
    }

    /// Runs `f` with this registry in force on this thread.
    ///
    /// ```
    /// use resilience_runtime::Registry;
    ///
    /// let r = Registry::new();
    /// assert!(r.enter(Registry::current).ptr_eq(&r));
    /// assert!(Registry::current().ptr_eq(Registry::global()));
    /// ```
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        let _guard = ScopeGuard::install(self.clone());
        f()
    }
}

fn scoped() -> Option<Registry> {
    if !crate::context::in_scope() {
        return None;
    }
    SCOPED
        .try_with(|s| s.try_borrow().ok().and_then(|s| s.clone()))
        .ok()
        .flatten()
}

/// The registry in force, if it is not the global one: one thread-local read when no scope is
/// in force on this thread. Scoping is per thread and per poll: nothing process-wide changes.
#[inline]
pub(crate) fn scoped_registry() -> Option<Registry> {
    scoped()
}

/// The per-call override in force on this thread, if any: one thread-local read when no scope
/// is (the caller checks `context::in_scope` first).
pub(crate) fn call_override() -> Option<Arc<Layer>> {
    OVERRIDE
        .try_with(|o| o.try_borrow().ok().and_then(|o| o.clone()))
        .ok()
        .flatten()
}

/// Runs `fut` with `policy` over the policy of every resilient call it makes, on any registry:
/// a per-call override, for a tenant or a request. Its values win over the configuration's
/// `[sites."<name>"]` table, which wins over the attribute; an override inside another wins
/// over the outer one where both set a value. Each site takes what its code allows (see
/// [`PolicyOverride`]).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use resilience_runtime::registry::PolicyOverride;
/// use resilience_runtime::{resilient, with_policy, ConnectorError, Rejected};
///
/// #[derive(Debug, ConnectorError)]
/// enum ApiError {
///     #[connector(transient)]
///     Busy,
///     #[connector(rejected)]
///     Rejected(Rejected),
/// }
///
/// static RUNS: AtomicU32 = AtomicU32::new(0);
///
/// #[resilient(retries = 3, idempotent, timeout = "10s")]
/// async fn list() -> Result<(), ApiError> {
///     RUNS.fetch_add(1, Ordering::SeqCst);
///     Err(ApiError::Busy)
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), resilience_runtime::InvalidConfig> {
/// // This tenant gets one retry and a 2s timeout.
/// let tenant = PolicyOverride::new().with_retries(1).with_timeout(Duration::from_secs(2));
/// assert!(with_policy(tenant, list())?.await.is_err());
/// assert_eq!(RUNS.load(Ordering::SeqCst), 2);
///
/// let err = with_policy(PolicyOverride::new().with_retries(21), list()).unwrap_err();
/// assert_eq!(err.field(), "retries");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// The override breaks a rule (see [`PolicyOverride::validate`]).
pub fn with_policy<F: Future>(
    policy: PolicyOverride,
    fut: F,
) -> Result<WithPolicy<F>, InvalidConfig> {
    policy.validate()?;
    Ok(WithPolicy {
        layer: Arc::new(policy.layer),
        fut,
    })
}

pin_project_lite::pin_project! {
    /// The future returned by [`with_policy`].
    #[must_use = "futures do nothing unless polled"]
    pub struct WithPolicy<F> {
        layer: Arc<Layer>,
        #[pin]
        fut: F,
    }
}

impl<F> fmt::Debug for WithPolicy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithPolicy")
            .field("policy", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for WithPolicy<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _g = OverrideGuard::install(this.layer);
        this.fut.poll(cx)
    }
}

/// An override in force on this thread: the one it replaced, and whether a scope was in force.
struct OverrideGuard {
    prev: Option<Arc<Layer>>,
    was_scoped: bool,
}

impl OverrideGuard {
    fn install(layer: &Arc<Layer>) -> OverrideGuard {
        let prev = OVERRIDE
            .try_with(|o| {
                o.try_borrow_mut().ok().and_then(|mut o| {
                    // Inside another override: this one's values over the outer one's.
                    let mine = match &*o {
                        Some(outer) => Arc::new(layer.over(outer)),
                        None => layer.clone(),
                    };
                    o.replace(mine)
                })
            })
            .ok()
            .flatten();
        OverrideGuard {
            prev,
            was_scoped: crate::context::set_scope(true),
        }
    }
}

impl Drop for OverrideGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        crate::context::set_scope(self.was_scoped);
        let _ = OVERRIDE.try_with(|o| {
            if let Ok(mut o) = o.try_borrow_mut() {
                *o = prev;
            }
        });
    }
}

/// A scope in force on this thread: the registry it replaced, and whether one was in force.
struct ScopeGuard {
    prev: Option<Registry>,
    was_scoped: bool,
}

impl ScopeGuard {
    fn install(r: Registry) -> ScopeGuard {
        let prev = SCOPED
            .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.replace(r)))
            .ok()
            .flatten();
        ScopeGuard {
            prev,
            was_scoped: crate::context::set_scope(true),
        }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        crate::context::set_scope(self.was_scoped);
        let _ = SCOPED.try_with(|s| {
            if let Ok(mut s) = s.try_borrow_mut() {
                *s = prev;
            }
        });
    }
}

/// The future returned by [`Registry::scope`].
pub struct Scoped<F> {
    registry: Registry,
    fut: Pin<Box<F>>,
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _g = ScopeGuard::install(self.registry.clone());
        self.fut.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scope_installs_the_registry_for_the_future_only() {
        let r = Registry::new();
        assert!(r.scope(async { Registry::current() }).await.ptr_eq(&r));
        assert!(Registry::current().ptr_eq(Registry::global()));
        assert!(r.enter(Registry::current).ptr_eq(&r));
    }
}
