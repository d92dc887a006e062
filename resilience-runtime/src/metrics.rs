//! Per-site counters and their snapshot.
//!
//! Each annotated site owns a block of relaxed atomic counters: requests by outcome and class,
//! retries, retries that ended in success, rejections, rate-limit decisions and, when an exporter
//! asked for it with [`set_latency_enabled`], a latency histogram. A counter increment is one
//! uncontended atomic add; nothing is hashed or locked per call. [`crate::Registry::metrics`]
//! returns a [`MetricsSnapshot`] that exporters turn into the seed's metric families:
//!
//! | metric | labels | source |
//! |---|---|---|
//! | `requests_total` | connector, operation, status | [`SiteMetrics::ok`], [`SiteMetrics::errors`] |
//! | `requests_total` | connector, operation, status = `rejected`, reason | [`SiteMetrics::rejections`] (by [`Rejected::kind`]) |
//! | `request_latency_seconds` | connector, operation | [`SiteMetrics::latency`] |
//! | `circuit_breaker_state` | connector (the breaker's name) | [`crate::registry::BreakerHealth::gauge`] |
//! | `retry_total` | connector, operation | [`SiteMetrics::retries`] |
//! | `retry_success_total` | connector, operation | [`SiteMetrics::retry_successes`] |
//! | `retry_budget_exhausted_total` | connector, operation | [`SiteMetrics::budget_exhausted`] |
//! | `credential_refresh_total` | connector, operation, result | [`SiteMetrics::refreshes`], [`SiteMetrics::refresh_errors`] |
//! | `fallback_total` | connector, operation | [`SiteMetrics::fallbacks`] |
//! | `rate_limit_total` | connector, result | [`SiteMetrics::rate_limit_allowed`], [`SiteMetrics::rate_limit_blocked`] |
//! | `rate_limit_wait_seconds` | limiter | [`SiteMetrics::rate_limit_wait`] |
//! | `breaker_key_evictions_total` | breaker | [`KeyedBreakerMetrics::key_evictions`] |
//!
//! The `connector` label is [`SiteSnapshot::connector`]: `#[resilient(connector = "...")]`, else
//! the crate's name. The counters of these events are taken where each happens (a rejection, a
//! refused retry, a refresh's end, a fallback, a wait for a permit), never on a call's happy path.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::{ErrorClass, Rejected};

/// Turns latency measurement on or off for every site (off by default: it costs two clock reads
/// per call). Exporters turn it on.
pub fn set_latency_enabled(enabled: bool) {
    LATENCY.store(enabled, Ordering::Relaxed);
}

/// The setting of [`set_latency_enabled`]: an operator's choice for the whole process, as the
/// exporter that wants the histogram is.
static LATENCY: AtomicBool = AtomicBool::new(false);

/// Whether latency is measured (a call that measures it reads the clock at its start, so it
/// takes the engine's full path).
#[inline(always)]
pub(crate) fn latency_enabled() -> bool {
    LATENCY.load(Ordering::Relaxed)
}

/// Upper bounds of the latency histogram's buckets, in seconds (the last bucket is `+Inf`).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A counter split over cache lines, one stripe per thread: threads that count at the same moment
/// do not fight over one line, and a thread that owns its stripe counts with a plain add (no
/// `lock` prefix), because no other thread writes that stripe. Read by summing the stripes.
///
/// Ownership is process-wide: a thread takes one of `OWNED` stripe indexes for every counter,
/// and gives it back when it exits. Threads beyond `OWNED` at once share the last stripe with an
/// atomic add. A stripe passes from an exiting thread to a new one through `OWNERS` (release on
/// give-back, acquire on take), so the new owner's first add reads the old owner's last.
#[derive(Debug, Default)]
struct Striped([Padded; STRIPES]);

/// Stripes a thread can own.
const OWNED: usize = 8;
/// `OWNED` owned stripes and one shared by the threads that own none.
const STRIPES: usize = OWNED + 1;
/// The stripe of a thread that has not counted yet.
pub(crate) const NO_STRIPE: usize = usize::MAX;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl Striped {
    #[inline(always)]
    fn inc(&self) {
        let i = crate::context::stripe();
        match self.0.get(i) {
            // Owned: this thread is the stripe's only writer, so a load and a store are exact.
            Some(p) if i < OWNED => {
                p.0.store(p.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed)
            }
            _ => self.inc_slow(i),
        }
    }

    /// The shared stripe, or the first count of this thread (which takes a stripe first).
    #[cold]
    #[inline(never)]
    fn inc_slow(&self, i: usize) {
        let i = if i == NO_STRIPE { take_stripe() } else { i };
        match self.0.get(i) {
            Some(p) if i < OWNED => {
                p.0.store(p.0.load(Ordering::Relaxed) + 1, Ordering::Relaxed)
            }
            _ => {
                if let Some(shared) = self.0.last() {
                    shared.0.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

/// Which owned stripes are taken: bit `i` for stripe `i`.
static OWNERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

// This thread's stripe of every [`Striped`] counter, an owned one (`< OWNED`), the shared one
// (`OWNED`) or `NO_STRIPE`, is kept with the thread's call context (`context::stripe`): one
// thread-local for both on the fast path.
thread_local! {
    /// Gives the owned stripe back when the thread exits.
    static OWNERSHIP: StripeOwnership = const { StripeOwnership };
}

/// The thread-exit hook of an owned stripe.
struct StripeOwnership;

impl Drop for StripeOwnership {
    fn drop(&mut self) {
        // Anything this thread still counts from here on (other thread-locals' destructors)
        // goes to the shared stripe, before the owned one is given back.
        let i = crate::context::set_stripe(OWNED).unwrap_or(NO_STRIPE);
        if i < OWNED {
            OWNERS.fetch_and(!(1 << i), Ordering::Release);
        }
    }
}

/// This thread counts for the first time: it takes a free owned stripe, or the shared one.
#[cold]
#[inline(never)]
fn take_stripe() -> usize {
    let mut taken = OWNERS.load(Ordering::Relaxed);
    let i = loop {
        let free = !taken & ((1 << OWNED) - 1);
        if free == 0 {
            break OWNED;
        }
        let i = free.trailing_zeros() as usize;
        match OWNERS.compare_exchange_weak(
            taken,
            taken | (1 << i),
            Ordering::Acquire,
            Ordering::Relaxed,
        ) {
            Ok(_) => break i,
            Err(now) => taken = now,
        }
    };
    // Registers the give-back on exit; a thread already past its thread-locals' destruction
    // cannot register one, and counts on the shared stripe.
    let i = if i < OWNED && OWNERSHIP.try_with(|_| ()).is_err() {
        OWNERS.fetch_and(!(1 << i), Ordering::Release);
        OWNED
    } else {
        i
    };
    // A thread whose context is gone (exiting) counts on the shared stripe without recording.
    let _ = crate::context::set_stripe(i);
    i
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    ok: Striped,
    errors: [AtomicU64; ErrorClass::ALL.len()],
    /// By [`Rejected::index`](crate::Rejected).
    rejected: [AtomicU64; Rejected::KINDS.len()],
    retries: AtomicU64,
    retry_successes: AtomicU64,
    budget_exhausted: AtomicU64,
    fallbacks: AtomicU64,
    refresh_ok: AtomicU64,
    refresh_errors: AtomicU64,
    rate_allowed: AtomicU64,
    rate_blocked: AtomicU64,
    capacity_waits: AtomicU64,
    latency_buckets: [AtomicU64; 12],
    latency_sum_nanos: AtomicU64,
    /// Waits for the rate limiter's permit, by [`LATENCY_BUCKETS`].
    rate_wait_buckets: [AtomicU64; 12],
    rate_wait_sum_nanos: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    #[inline(always)]
    pub(crate) fn ok(&self, retried: bool) {
        self.ok.inc();
        if retried {
            inc(&self.retry_successes);
        }
    }
    pub(crate) fn error(&self, class: ErrorClass) {
        if let Some(c) = self.errors.get(class.index()) {
            inc(c);
        }
    }
    /// A call ended by the rejection `kind` ([`Rejected::index`](crate::Rejected)).
    pub(crate) fn rejected(&self, kind: usize) {
        if let Some(c) = self.rejected.get(kind) {
            inc(c);
        }
    }
    pub(crate) fn retry(&self) {
        inc(&self.retries);
    }
    pub(crate) fn budget_exhausted(&self) {
        inc(&self.budget_exhausted);
    }
    pub(crate) fn fallback(&self) {
        inc(&self.fallbacks);
    }
    /// A credential refresh ended: `ok` when it succeeded.
    pub(crate) fn refresh(&self, ok: bool) {
        inc(if ok {
            &self.refresh_ok
        } else {
            &self.refresh_errors
        });
    }
    pub(crate) fn rate(&self, allowed: bool) {
        inc(if allowed {
            &self.rate_allowed
        } else {
            &self.rate_blocked
        });
    }
    pub(crate) fn capacity_wait(&self) {
        inc(&self.capacity_waits);
    }
    /// A call waits `d` for the rate limiter's next permit.
    pub(crate) fn rate_limit_wait(&self, d: Duration) {
        observe(&self.rate_wait_buckets, &self.rate_wait_sum_nanos, d);
    }
    pub(crate) fn latency(&self, d: Duration) {
        observe(&self.latency_buckets, &self.latency_sum_nanos, d);
    }

    pub(crate) fn snapshot(&self) -> SiteMetrics {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let refresh_errors = l(&self.refresh_errors);
        SiteMetrics {
            ok: self.ok.sum(),
            errors: ClassCounts {
                transient: l(&self.errors[ErrorClass::Transient.index()]),
                throttled: l(&self.errors[ErrorClass::Throttled.index()]),
                permanent: l(&self.errors[ErrorClass::Permanent.index()]),
                policy_violation: l(&self.errors[ErrorClass::PolicyViolation.index()]),
                auth: l(&self.errors[ErrorClass::Auth.index()]),
            },
            rejected: self.rejected.iter().map(l).sum(),
            rejections: RejectedCounts(self.rejected.each_ref().map(l)),
            retries: l(&self.retries),
            retry_successes: l(&self.retry_successes),
            budget_exhausted: l(&self.budget_exhausted),
            fallbacks: l(&self.fallbacks),
            // `refresh_errors` read once, so that `refreshes` is never below it.
            refreshes: l(&self.refresh_ok) + refresh_errors,
            refresh_errors,
            rate_limit_allowed: l(&self.rate_allowed),
            rate_limit_blocked: l(&self.rate_blocked),
            capacity_waits: l(&self.capacity_waits),
            latency: LatencySnapshot::of(&self.latency_buckets, &self.latency_sum_nanos),
            rate_limit_wait: LatencySnapshot::of(
                &self.rate_wait_buckets,
                &self.rate_wait_sum_nanos,
            ),
        }
    }
}

/// Counts `d` in the bucket of [`LATENCY_BUCKETS`] it falls in, and adds it to `sum_nanos`.
fn observe(buckets: &[AtomicU64; 12], sum_nanos: &AtomicU64, d: Duration) {
    let s = d.as_secs_f64();
    let i = LATENCY_BUCKETS
        .iter()
        .position(|b| s <= *b)
        .unwrap_or(LATENCY_BUCKETS.len());
    if let Some(c) = buckets.get(i) {
        inc(c);
    }
    sum_nanos.fetch_add(crate::clock::nanos(d), Ordering::Relaxed);
}

/// Calls ended by a rejection of the runtime, by [`Rejected::kind`].
///
/// ```
/// use resilience_runtime::metrics::RejectedCounts;
///
/// let none = RejectedCounts::default();
/// assert_eq!(none.get("circuit_open"), Some(0));
/// assert_eq!(none.get("no_such_kind"), None);
/// assert_eq!(none.iter().count(), resilience_runtime::Rejected::KINDS.len());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectedCounts([u64; Rejected::KINDS.len()]);

impl RejectedCounts {
    /// The count of one kind (one of [`Rejected::KINDS`]); `None` for another string.
    pub fn get(&self, kind: &str) -> Option<u64> {
        let i = Rejected::KINDS.iter().position(|k| *k == kind)?;
        self.0.get(i).copied()
    }

    /// Each kind of [`Rejected::KINDS`] with its count, in that order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Rejected::KINDS.iter().copied().zip(self.0.iter().copied())
    }

    /// The sum over kinds.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl serde::Serialize for RejectedCounts {
    /// A map from each kind to its count.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Errors counted by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClassCounts {
    /// Transient errors that ended a call.
    pub transient: u64,
    /// Throttled errors (429) that ended a call.
    pub throttled: u64,
    /// Permanent errors.
    pub permanent: u64,
    /// Policy violations.
    pub policy_violation: u64,
    /// Auth errors that ended a call.
    pub auth: u64,
}

impl ClassCounts {
    /// The count for one class.
    pub fn get(&self, class: ErrorClass) -> u64 {
        match class {
            ErrorClass::Transient => self.transient,
            ErrorClass::Throttled => self.throttled,
            ErrorClass::Permanent => self.permanent,
            ErrorClass::PolicyViolation => self.policy_violation,
            ErrorClass::Auth => self.auth,
        }
    }

    /// The sum over classes.
    pub fn total(&self) -> u64 {
        self.transient + self.throttled + self.permanent + self.policy_violation + self.auth
    }
}

/// A histogram of durations: counts one per bound of [`LATENCY_BUCKETS`], then `+Inf`
/// (not cumulative).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LatencySnapshot {
    /// Counts per bucket.
    pub buckets: Vec<u64>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
}

impl LatencySnapshot {
    fn of(buckets: &[AtomicU64; 12], sum_nanos: &AtomicU64) -> LatencySnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LatencySnapshot {
            buckets: buckets.iter().map(l).collect(),
            sum_seconds: Duration::from_nanos(l(sum_nanos)).as_secs_f64(),
        }
    }

    /// Observations counted, over all buckets.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One site's counters at one moment. Calls are counted once, when they end.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SiteMetrics {
    /// Calls that returned `Ok`.
    pub ok: u64,
    /// Calls that returned an error from the dependency, by class (rejections excluded).
    pub errors: ClassCounts,
    /// Calls ended by a rejection of the runtime (open circuit, timeout, deadline, limit): the
    /// sum of `rejections`.
    pub rejected: u64,
    /// Calls ended by a rejection, by its kind: a gate's (open circuit, deadline before an
    /// attempt, no rate-limit permit or bulkhead slot in time), or an attempt's timeout or the
    /// deadline that ended the call.
    pub rejections: RejectedCounts,
    /// Retries made.
    pub retries: u64,
    /// Calls that succeeded after at least one retry.
    pub retry_successes: u64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: u64,
    /// Calls answered by the fallback.
    pub fallbacks: u64,
    /// Credential refreshes run (each after an `auth` error), whatever their result.
    pub refreshes: u64,
    /// Credential refreshes that failed (or that the call's deadline cut short): the call ended
    /// with the refresh's error.
    pub refresh_errors: u64,
    /// Permits the rate limiter granted.
    pub rate_limit_allowed: u64,
    /// Permits the rate limiter refused.
    pub rate_limit_blocked: u64,
    /// Waits for capacity: a rate limit or a bulkhead refused the call before an attempt, and
    /// the call waited to try the gate again (no attempt, no retry spent).
    pub capacity_waits: u64,
    /// Latency histogram (empty counts unless [`set_latency_enabled`] is on).
    pub latency: LatencySnapshot,
    /// The waits for the rate limiter's next permit (each a [`capacity_waits`] of the rate
    /// limit), as the limiter gave them.
    ///
    /// [`capacity_waits`]: SiteMetrics::capacity_waits
    pub rate_limit_wait: LatencySnapshot,
}

impl SiteMetrics {
    /// Calls that ended, whatever the outcome.
    pub fn calls(&self) -> u64 {
        self.ok + self.errors.total() + self.rejected
    }
}

/// One annotated site in a snapshot.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SiteSnapshot {
    /// The connector label ([`Policy::connector_name`](crate::engine::Policy::connector_name)):
    /// `#[resilient(connector = "...")]`, else the crate's name.
    pub connector: String,
    /// The operation: the fn's name.
    pub operation: &'static str,
    /// The module path of the fn.
    pub module: &'static str,
    /// The breaker's name, if any.
    pub breaker: Option<&'static str>,
    /// The rate limiter's name, if any.
    pub rate_limit: Option<&'static str>,
    /// The counters.
    pub metrics: SiteMetrics,
}

/// One per-key breaker base (`breaker_key`) in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyedBreakerMetrics {
    /// The base's name: the `breaker` label.
    pub breaker: String,
    /// Live keys, at most the base's `max_keys`.
    pub keys: u64,
    /// Keys evicted to keep the bound (see
    /// [`KeyedBreakers`](crate::registry::KeyedBreakers)): `breaker_key_evictions_total`.
    pub key_evictions: u64,
}

/// Every site of a registry, and its per-key breaker bases.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct MetricsSnapshot {
    /// One entry per site that has been called.
    pub sites: Vec<SiteSnapshot>,
    /// One entry per per-key breaker base, sorted by name.
    pub keyed_breakers: Vec<KeyedBreakerMetrics>,
}

impl MetricsSnapshot {
    /// The entry of one operation, if it was called.
    pub fn site(&self, operation: &str) -> Option<&SiteSnapshot> {
        self.sites.iter().find(|s| s.operation == operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts once when the thread exits, from a thread-local destructor, which may run before
    /// or after the one that gives the thread's stripe back.
    struct CountOnExit(std::sync::Arc<Striped>);

    impl Drop for CountOnExit {
        fn drop(&mut self) {
            self.0.inc();
        }
    }

    thread_local! {
        static ON_EXIT: std::cell::RefCell<Option<CountOnExit>> = const { std::cell::RefCell::new(None) };
    }

    /// Threads that own a stripe add without `lock`; the count must still be exact when more
    /// threads than owned stripes count at once (the rest share one stripe atomically), when
    /// threads exit and new ones take their stripes over, and when a thread counts while it
    /// exits.
    #[test]
    fn a_striped_count_is_exact_across_owners_sharers_and_exits() {
        let counter = std::sync::Arc::new(Striped::default());
        let threads_per_wave = OWNED + 4;
        let per_thread = 200_000;
        let mut total = 0;
        for wave in 0..4 {
            // Every thread of a wave counts at the same time.
            let start = std::sync::Arc::new(std::sync::Barrier::new(threads_per_wave));
            let threads: Vec<_> = (0..threads_per_wave)
                .map(|_| {
                    let (c, start) = (counter.clone(), start.clone());
                    std::thread::spawn(move || {
                        ON_EXIT.with(|e| *e.borrow_mut() = Some(CountOnExit(c.clone())));
                        start.wait();
                        for _ in 0..per_thread {
                            c.inc();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            total += threads_per_wave * (per_thread + 1);
            assert_eq!(counter.sum(), total as u64, "after wave {wave}");
        }
    }
}
