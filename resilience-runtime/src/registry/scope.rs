//! Scoping: which registry is in force. A scope is per thread and per poll (a thread-local set
//! for the length of a poll or of a blocking closure): nothing process-wide changes, so one test's
//! scope never reaches another test's thread, and a thread in no scope pays one thread-local read.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::Registry;

thread_local! {
    static SCOPED: RefCell<Option<Registry>> = const { RefCell::new(None) };
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
