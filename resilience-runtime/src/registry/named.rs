//! The registry's store: one [`Named`] map per kind of instance (breakers, per-key bases, budgets,
//! rate limiters, bulkheads) and per kind of recorded settings, and the [`Handle`] through which
//! sites follow a rate limiter or bulkhead that is replaced.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::limit::{Bulkhead, RateLimit};

/// Values of one kind by name, each made once.
///
/// A look-up that finds its name takes the read lock only. A poisoned lock is used as it is: every
/// write is one insertion, so a panic elsewhere cannot leave a map half-changed.
pub(super) struct Named<T> {
    map: RwLock<HashMap<Arc<str>, T>>,
}

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> Named<T> {
    /// Visits every value with its name.
    pub(super) fn for_each(&self, mut f: impl FnMut(&str, &T)) {
        for (name, value) in self.read().iter() {
            f(name, value);
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<Arc<str>, T>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Arc<str>, T>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: Clone> Named<T> {
    /// The value of `name`, if there is one.
    pub(super) fn get(&self, name: &str) -> Option<T> {
        self.read().get(name).cloned()
    }

    /// The value of `name`, made by `make` if there is none. `make` runs under this store's write
    /// lock, so that two callers never make two instances of one name, and so that settings it
    /// reads from another store are the latest: a reconfiguration that records them first and then
    /// looks for the live instance either is read here or finds the instance made.
    pub(super) fn get_or_insert_with(&self, name: &str, make: impl FnOnce() -> T) -> T {
        if let Some(value) = self.get(name) {
            return value;
        }
        self.write().entry(name.into()).or_insert_with(make).clone()
    }

    /// Records the value `next` makes of the one recorded before (if any), and returns it.
    pub(super) fn update(&self, name: &str, next: impl FnOnce(Option<&T>) -> T) -> T {
        let mut map = self.write();
        let value = next(map.get(name));
        map.insert(name.into(), value.clone());
        value
    }
}

impl<T: ?Sized> Named<Arc<Handle<T>>> {
    /// Installs `instance` as `name`: sites that already hold the name's handle use it from their
    /// next call.
    pub(super) fn install(&self, name: &str, instance: Arc<T>) {
        let mut map = self.write();
        match map.get(name) {
            Some(handle) => handle.set(instance),
            None => {
                map.insert(name.into(), Handle::new(instance));
            }
        }
    }
}

/// A named rate limiter or bulkhead as sites hold it: the instance installed last, read per call,
/// so that installing another reaches every site on its next call.
pub(crate) struct Handle<T: ?Sized>(arc_swap::ArcSwap<Arc<T>>);

impl<T: ?Sized> Handle<T> {
    pub(super) fn new(instance: Arc<T>) -> Arc<Handle<T>> {
        Arc::new(Handle(arc_swap::ArcSwap::from_pointee(instance)))
    }

    /// Runs `f` with the current instance: a lock-free load, so that calls through one limiter
    /// or bulkhead do not contend on a lock.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.0.load())
    }

    fn set(&self, instance: Arc<T>) {
        self.0.store(Arc::new(instance));
    }
}

/// A named rate limiter as sites hold it.
pub(crate) type LimiterHandle = Arc<Handle<dyn RateLimit>>;
/// A named bulkhead as sites hold it.
pub(crate) type BulkheadHandle = Arc<Handle<dyn Bulkhead>>;
