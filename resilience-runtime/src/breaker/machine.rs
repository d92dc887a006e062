//! The breaker's state machine: one word of state, the time it opened, and the ratio window.
//!
//! This file reads no clock and logs nothing: the caller passes the time (lazily, as a closure)
//! and reports the [`Transition`]s it returns. It takes its atomics from `super::sync`, so the
//! loom models in `tests/loom_breaker.rs` compile this same file against loom's atomics without
//! any `--cfg` flag.

use std::time::Duration;

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use super::sync::{AtomicU64, Ordering};

/// What one call told the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The dependency answered well.
    Success,
    /// A transient failure or a timeout.
    Failure,
    /// A permanent, policy or auth error, or a cancelled call: no health signal.
    Ignored,
}

/// Admission to call through a breaker, returned by [`Breaker::acquire`]. Give it back with
/// [`Breaker::record`] or [`Breaker::release`]; [`Breaker::try_acquire`] wraps it in a guard
/// that does so on drop.
///
/// [`Breaker::acquire`]: crate::breaker::Breaker::acquire
/// [`Breaker::record`]: crate::breaker::Breaker::record
/// [`Breaker::release`]: crate::breaker::Breaker::release
/// [`Breaker::try_acquire`]: crate::breaker::Breaker::try_acquire
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a ticket must be recorded or released, or a half-open probe slot leaks"]
pub struct Ticket {
    generation: u32,
    probe: bool,
}

impl Ticket {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The generation the ticket was issued in.
    #[allow(dead_code, reason = "read by the loom models")]
    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }
}

// Word layout: | successes 8 | probes 8 | failures 14 | state 2 | ratio 1 | generation 31 |
//
// `ratio` is the trip mode: set while the breaker judges a ratio window. A closed breaker's word
// then never equals the bare `(generation, CLOSED)` the success fast path compares with, so a
// ratio-mode success goes to the window without the fast path reading anything else.
//
// `probes` counts every probe ticket not yet recorded or released, whatever its generation: a
// probe that outlives its half-open period (the breaker reopened, closed or was reset meanwhile)
// keeps its slot until it comes back, so probes in flight stay bounded across periods. Every
// transition carries the count over; only `successes` and `failures` start afresh.
const GEN_MASK: u64 = 0x7FFF_FFFF;
const RATIO_BIT: u64 = 1 << 31;
const STATE_SHIFT: u32 = 32;
const FAIL_SHIFT: u32 = 34;
const PROBE_SHIFT: u32 = 48;
const SUCC_SHIFT: u32 = 56;
const PROBE_BITS: u64 = 0xFF << PROBE_SHIFT;
pub(crate) const MAX_FAILURES: u64 = (1 << 14) - 1;

pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;

/// No open epoch has published its opening time.
const UNPUBLISHED: u64 = u64::MAX;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    fn new(generation: u32, state: u64) -> Word {
        Word((u64::from(generation) & GEN_MASK) | (state << STATE_SHIFT))
    }
    fn ratio(self) -> bool {
        self.0 & RATIO_BIT != 0
    }
    fn with_ratio(self, on: bool) -> Word {
        Word(if on {
            self.0 | RATIO_BIT
        } else {
            self.0 & !RATIO_BIT
        })
    }
    fn generation(self) -> u32 {
        (self.0 & GEN_MASK) as u32
    }
    fn state(self) -> u64 {
        (self.0 >> STATE_SHIFT) & 0b11
    }
    fn failures(self) -> u64 {
        (self.0 >> FAIL_SHIFT) & MAX_FAILURES
    }
    fn probes(self) -> u64 {
        (self.0 >> PROBE_SHIFT) & 0xFF
    }
    fn successes(self) -> u64 {
        (self.0 >> SUCC_SHIFT) & 0xFF
    }
    fn with_failures(self, n: u64) -> Word {
        Word((self.0 & !(MAX_FAILURES << FAIL_SHIFT)) | (n.min(MAX_FAILURES) << FAIL_SHIFT))
    }
    fn with_probes(self, n: u64) -> Word {
        Word((self.0 & !PROBE_BITS) | ((n & 0xFF) << PROBE_SHIFT))
    }
    fn with_successes(self, n: u64) -> Word {
        Word((self.0 & !(0xFF << SUCC_SHIFT)) | ((n & 0xFF) << SUCC_SHIFT))
    }
    /// The next generation in `state`, with the probes in flight and the trip mode carried over.
    fn next(self, state: u64) -> Word {
        Word::new(self.generation().wrapping_add(1), state)
            .with_probes(self.probes())
            .with_ratio(self.ratio())
    }
}

/// A state change, with the time it happened, for the caller to log and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The state before (`CLOSED`, `OPEN` or `HALF_OPEN`).
    pub(crate) from: u64,
    /// The state after.
    pub(crate) to: u64,
    /// When, in the caller's nanoseconds.
    pub(crate) at: u64,
    /// The generation the transition started: events can be ordered by it.
    pub(crate) generation: u32,
}

/// The limits the machine enforces, as integers that a reconfiguration replaces in place (a live
/// breaker keeps its state). The closed-state paths read none of them.
#[derive(Debug)]
pub(crate) struct Limits {
    /// Consecutive failures that open (`u64::MAX` in ratio mode).
    threshold: AtomicU64,
    /// The cooldown, in nanoseconds.
    cooldown: AtomicU64,
    /// Probes in flight at once, whatever half-open period admitted them.
    probes: AtomicU64,
    /// Successful probes that close.
    successes: AtomicU64,
}

impl Limits {
    pub(crate) fn new(threshold: u64, cooldown: u64, probes: u64, successes: u64) -> Limits {
        Limits {
            threshold: AtomicU64::new(threshold),
            cooldown: AtomicU64::new(cooldown),
            probes: AtomicU64::new(probes),
            successes: AtomicU64::new(successes),
        }
    }

    /// Replaces every limit; calls admitted under the old ones finish under the new.
    pub(crate) fn set(&self, threshold: u64, cooldown: u64, probes: u64, successes: u64) {
        self.threshold.store(threshold, Ordering::Relaxed);
        self.cooldown.store(cooldown, Ordering::Relaxed);
        self.probes.store(probes, Ordering::Relaxed);
        self.successes.store(successes, Ordering::Relaxed);
    }

    pub(crate) fn threshold(&self) -> u64 {
        self.threshold.load(Ordering::Relaxed)
    }

    pub(crate) fn cooldown(&self) -> u64 {
        self.cooldown.load(Ordering::Relaxed)
    }

    pub(crate) fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    pub(crate) fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }
}

/// Where a machine finds its [`Limits`]: its own copy, or a value shared by many machines (every
/// per-key breaker of one name shares one).
pub(crate) trait HasLimits {
    /// The limits.
    fn limits(&self) -> &Limits;
}

impl HasLimits for Limits {
    fn limits(&self) -> &Limits {
        self
    }
}

/// A ratio window: the outcome of the last `size` calls, one bit each.
pub(crate) struct Window {
    size: u64,
    threshold: AtomicU64,
    calls: AtomicU64,
    bits: Box<[AtomicU64]>,
}

impl Window {
    pub(crate) fn new(size: u32, ratio: f64) -> Window {
        let size = u64::from(size.max(1));
        let words = size.div_ceil(64) as usize;
        let threshold = ratio_threshold(size, ratio);
        Window {
            size,
            threshold: AtomicU64::new(threshold),
            calls: AtomicU64::new(0),
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one call; returns the failures in the window once it is full, whatever the
    /// outcome: a success that completes a full window at the ratio opens the breaker as a
    /// failure would.
    fn record(&self, failed: bool) -> Option<u64> {
        let pos = self.calls.fetch_add(1, Ordering::AcqRel);
        let slot = pos % self.size;
        let (w, b) = ((slot / 64) as usize, slot % 64);
        let word = self.bits.get(w)?;
        if failed {
            word.fetch_or(1 << b, Ordering::AcqRel);
        } else {
            word.fetch_and(!(1 << b), Ordering::AcqRel);
        }
        (pos + 1 >= self.size).then(|| self.failures_with(Ordering::Acquire))
    }

    fn reset(&self) {
        for w in self.bits.iter() {
            w.store(0, Ordering::Release);
        }
        self.calls.store(0, Ordering::Release);
    }

    fn failures_with(&self, order: Ordering) -> u64 {
        self.bits
            .iter()
            .map(|x| u64::from(x.load(order).count_ones()))
            .sum()
    }
}

/// The fewest failures in a full window of `size` calls whose share reaches `ratio`: the smallest
/// `n` in `1..=size` with `n / size >= ratio`, or `size` when none does (a ratio above 1).
///
/// `size * ratio` rounded up is only an estimate: 50 * 0.14 is 7.000000000000001 in floating
/// point, and its ceiling would ask for 8 failures where 7 of 50 is exactly 14%. The quotient
/// `n / size` is correctly rounded, so for a ratio written as a decimal it equals the double
/// nearest that decimal exactly when `n / size` is that decimal; the estimate is moved down, then
/// up, until that comparison says it is the smallest.
pub(crate) fn ratio_threshold(size: u64, ratio: f64) -> u64 {
    let size = size.max(1);
    let reaches = |n: u64| n as f64 / size as f64 >= ratio;
    // `max` also turns a NaN estimate into 1.
    let mut n = ((size as f64) * ratio).ceil().max(1.0).min(size as f64) as u64;
    while n > 1 && reaches(n - 1) {
        n -= 1;
    }
    while n < size && !reaches(n) {
        n += 1;
    }
    n
}

/// The caller's clock, read at most once and only when a transition needs the time.
struct Now<F> {
    read: Option<F>,
    at: u64,
}

impl<F: FnOnce() -> u64> Now<F> {
    fn new(read: F) -> Self {
        Now {
            read: Some(read),
            at: 0,
        }
    }

    fn get(&mut self) -> u64 {
        if let Some(f) = self.read.take() {
            self.at = f();
        }
        self.at
    }
}

/// The lock-free state machine.
pub(crate) struct Machine<L = Limits> {
    limits: L,
    word: AtomicU64,
    /// When the current open epoch began; valid for the epoch whose generation `opened_gen`
    /// holds. Written only by the thread whose compare-and-swap opened the breaker.
    opened_at: AtomicU64,
    opened_gen: AtomicU64,
    /// The ratio window (ratio mode only; see [`Limits::ratio`]), replaced when a
    /// reconfiguration changes the trip mode or the window's size. One word: empty in
    /// consecutive mode, which never loads it.
    window: ArcSwapOption<Window>,
}

impl<L: HasLimits> Machine<L> {
    pub(crate) fn new(limits: L, window: Option<Window>) -> Machine<L> {
        Machine {
            limits,
            word: AtomicU64::new(Word::new(0, CLOSED).with_ratio(window.is_some()).0),
            opened_at: AtomicU64::new(0),
            opened_gen: AtomicU64::new(UNPUBLISHED),
            window: ArcSwapOption::new(window.map(Arc::new)),
        }
    }

    /// The ratio window, for reading.
    fn window(&self) -> arc_swap::Guard<Option<Arc<Window>>> {
        self.window.load()
    }

    /// Replaces the ratio window (`None`: consecutive mode) on a reconfiguration. Calls recorded
    /// in the old window are forgotten; the breaker's state is kept.
    pub(crate) fn set_window(&self, window: Option<Window>) {
        let on = window.is_some();
        // Into ratio mode: the window before the bit, so a record that sees the bit finds it.
        // Out of it: the bit before the window, so none looks for a window that is gone.
        if on {
            self.window.store(window.map(Arc::new));
        }
        let mut w = self.load();
        while w.ratio() != on {
            match self.cas(w, w.with_ratio(on)) {
                Ok(()) => break,
                Err(actual) => w = actual,
            }
        }
        if !on {
            self.window.store(None);
        }
    }

    /// Sets the ratio of the current window in place (its size unchanged); false when the
    /// machine has no window or one of another size.
    pub(crate) fn set_ratio(&self, size: u32, ratio: f64) -> bool {
        match &*self.window() {
            Some(w) if w.size == u64::from(size.max(1)) => {
                w.threshold
                    .store(ratio_threshold(w.size, ratio), Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Where the limits come from, as given to [`Machine::new`].
    pub(crate) fn limits_source(&self) -> &L {
        &self.limits
    }

    #[inline(always)]
    fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    pub(crate) fn state(&self) -> u64 {
        self.load().state()
    }

    pub(crate) fn generation(&self) -> u32 {
        self.load().generation()
    }

    pub(crate) fn probes(&self) -> u64 {
        self.load().probes()
    }

    #[allow(dead_code, reason = "read by the loom models")]
    pub(crate) fn successes(&self) -> u64 {
        self.load().successes()
    }

    pub(crate) fn failures(&self) -> u64 {
        if self.load().ratio()
            && let Some(w) = &*self.window()
        {
            return w.failures_with(Ordering::Relaxed);
        }
        self.load().failures()
    }

    /// The opening time of the current open epoch, once published.
    #[allow(dead_code, reason = "read by the loom models")]
    pub(crate) fn opened_at(&self) -> Option<u64> {
        let w = self.load();
        (self.opened_gen.load(Ordering::Acquire) == u64::from(w.generation()))
            .then(|| self.opened_at.load(Ordering::Relaxed))
    }

    /// Asks to call through. A closed breaker admits with one atomic load and reads no clock.
    ///
    /// # Errors
    ///
    /// The time until a probe will be let through.
    #[inline]
    pub(crate) fn acquire(
        &self,
        now: impl FnOnce() -> u64,
    ) -> Result<(Ticket, Option<Transition>), Duration> {
        let w = self.load();
        if w.state() == CLOSED {
            let t = Ticket {
                generation: w.generation(),
                probe: false,
            };
            return Ok((t, None));
        }
        self.acquire_slow(w, now())
    }

    /// How long an open breaker still cools down at `now`, without touching it: `None` when it
    /// is not open, or its cooldown is over (its next [`Machine::acquire`] may admit a probe).
    pub(crate) fn cooldown_left(&self, now: impl FnOnce() -> u64) -> Option<Duration> {
        let w = self.load();
        if w.state() != OPEN {
            return None;
        }
        self.cooling(w, now).map(Duration::from_nanos)
    }

    /// The nanoseconds the opening of `w` (an open word) still cools down at `now`; `None` once
    /// its cooldown is over.
    fn cooling(&self, w: Word, now: impl FnOnce() -> u64) -> Option<u64> {
        let cooldown = self.limits.limits().cooldown();
        // The opening time belongs to this epoch only if its opener published it; until then
        // the breaker has only just opened.
        if self.opened_gen.load(Ordering::Acquire) != u64::from(w.generation()) {
            return Some(cooldown);
        }
        let elapsed = now().saturating_sub(self.opened_at.load(Ordering::Relaxed));
        (elapsed < cooldown).then(|| cooldown - elapsed)
    }

    /// A ticket when the breaker is closed, without touching it; `None` in any other state (the
    /// caller then goes through [`Machine::acquire`]).
    #[inline(always)]
    pub(crate) fn closed_ticket(&self) -> Option<Ticket> {
        let w = self.load();
        (w.state() == CLOSED).then(|| Ticket {
            generation: w.generation(),
            probe: false,
        })
    }

    #[cold]
    fn acquire_slow(
        &self,
        mut w: Word,
        now: u64,
    ) -> Result<(Ticket, Option<Transition>), Duration> {
        loop {
            match w.state() {
                CLOSED => {
                    let t = Ticket {
                        generation: w.generation(),
                        probe: false,
                    };
                    return Ok((t, None));
                }
                OPEN => {
                    if let Some(left) = self.cooling(w, || now) {
                        return Err(Duration::from_nanos(left));
                    }
                    // Probes of earlier periods still in flight hold their slots: with all of
                    // them taken, the breaker waits for one to come back, as a full half-open.
                    if w.probes() >= self.limits.limits().probes() {
                        return Err(Duration::ZERO);
                    }
                    let next = w.next(HALF_OPEN).with_probes(w.probes() + 1);
                    match self.cas(w, next) {
                        Ok(()) => {
                            let t = Ticket {
                                generation: next.generation(),
                                probe: true,
                            };
                            let tr = Transition {
                                from: OPEN,
                                to: HALF_OPEN,
                                at: now,
                                generation: next.generation(),
                            };
                            return Ok((t, Some(tr)));
                        }
                        Err(actual) => w = actual,
                    }
                }
                _ => {
                    if w.probes() >= self.limits.limits().probes() {
                        return Err(Duration::ZERO);
                    }
                    match self.cas(w, w.with_probes(w.probes() + 1)) {
                        Ok(()) => {
                            let t = Ticket {
                                generation: w.generation(),
                                probe: true,
                            };
                            return Ok((t, None));
                        }
                        Err(actual) => w = actual,
                    }
                }
            }
        }
    }

    /// Records the outcome of an admitted call. Results from an older generation are ignored,
    /// except that a probe's gives its slot back.
    #[inline(always)]
    pub(crate) fn record(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        now: impl FnOnce() -> u64,
    ) -> Option<Transition> {
        if !ticket.probe && outcome == Outcome::Success {
            // Hot path: a success through a closed breaker with no failures recorded (probes of
            // an earlier half-open period may still be in flight: they change nothing here).
            if self.load().0 & !PROBE_BITS == Word::new(ticket.generation, CLOSED).0 {
                return None;
            }
        }
        self.record_slow(ticket, outcome, now)
    }

    #[cold]
    #[inline(never)]
    fn record_slow(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        now: impl FnOnce() -> u64,
    ) -> Option<Transition> {
        let mut now = Now::new(now);
        if ticket.probe {
            return self.record_probe(ticket, outcome, &mut now);
        }
        if outcome == Outcome::Ignored {
            return None;
        }
        let mut w = self.load();
        if w.ratio()
            && let Some(window) = &*self.window()
        {
            if w.generation() != ticket.generation || w.state() != CLOSED {
                return None;
            }
            let failures = window.record(outcome == Outcome::Failure)?;
            if failures < window.threshold.load(Ordering::Relaxed) {
                return None;
            }
            loop {
                if let Some(tr) = self.trip(w, w.probes(), now.get()) {
                    return Some(tr);
                }
                // The word moved: another thread opened or reset the breaker (this ticket is now
                // stale), or a stale probe gave its slot back (the breaker is still to open).
                w = self.load();
                if w.generation() != ticket.generation || w.state() != CLOSED {
                    return None;
                }
            }
        }
        loop {
            if w.generation() != ticket.generation || w.state() != CLOSED {
                return None;
            }
            let next = match outcome {
                Outcome::Success if w.failures() == 0 => return None,
                Outcome::Success => w.with_failures(0),
                _ => w.with_failures(w.failures() + 1),
            };
            if next.failures() >= self.limits.limits().threshold() {
                if let Some(tr) = self.trip(w, w.probes(), now.get()) {
                    return Some(tr);
                }
                // Lost a race: another thread opened (this ticket is now stale), reset the
                // count with a success (this failure counts on top of it) or gave back a stale
                // probe's slot. Look again.
                w = self.load();
                continue;
            }
            match self.cas(w, next) {
                Ok(()) => return None,
                Err(actual) => w = actual,
            }
        }
    }

    fn record_probe<F: FnOnce() -> u64>(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        now: &mut Now<F>,
    ) -> Option<Transition> {
        let mut w = self.load();
        loop {
            // Whatever its generation, the ticket held a probe slot until now.
            let probes = w.probes().saturating_sub(1);
            if w.generation() != ticket.generation || w.state() != HALF_OPEN {
                // A probe of an earlier period: its outcome says nothing about this one.
                match self.cas(w, w.with_probes(probes)) {
                    Ok(()) => return None,
                    Err(actual) => {
                        w = actual;
                        continue;
                    }
                }
            }
            match outcome {
                Outcome::Failure => {
                    if let Some(tr) = self.trip(w, probes, now.get()) {
                        return Some(tr);
                    }
                }
                Outcome::Ignored => {
                    if self.cas(w, w.with_probes(probes)).is_ok() {
                        return None;
                    }
                }
                Outcome::Success => {
                    let successes = w.successes() + 1;
                    if successes >= self.limits.limits().successes() {
                        let next = w.next(CLOSED).with_probes(probes);
                        if self.cas(w, next).is_ok() {
                            if let Some(win) = &*self.window() {
                                win.reset();
                            }
                            return Some(Transition {
                                from: HALF_OPEN,
                                to: CLOSED,
                                at: now.get(),
                                generation: next.generation(),
                            });
                        }
                    } else if self
                        .cas(w, w.with_probes(probes).with_successes(successes))
                        .is_ok()
                    {
                        return None;
                    }
                }
            }
            w = self.load();
        }
    }

    /// Opens the breaker from `w` at `now`, leaving `probes` in flight. Returns `None` if `w` was
    /// stale.
    fn trip(&self, w: Word, probes: u64, now: u64) -> Option<Transition> {
        let next = w.next(OPEN).with_probes(probes);
        self.cas(w, next).ok()?;
        // Only the winner of the compare-and-swap writes the opening time, then publishes it for
        // this epoch; a reader that sees OPEN before that treats the breaker as just opened.
        self.opened_at.store(now, Ordering::Relaxed);
        self.opened_gen
            .store(u64::from(next.generation()), Ordering::Release);
        Some(Transition {
            from: w.state(),
            to: OPEN,
            at: now,
            generation: next.generation(),
        })
    }

    /// Forces the breaker open from any other state, for a full cooldown from `now` (a shared
    /// store's decision); `None` when it is open already. Probes in flight keep their slots.
    pub(crate) fn force_open(&self, now: u64) -> Option<Transition> {
        let mut w = self.load();
        while w.state() != OPEN {
            if let Some(tr) = self.trip(w, w.probes(), now) {
                return Some(tr);
            }
            w = self.load();
        }
        None
    }

    /// Forces the breaker closed (an operator's reset). Outstanding tickets become stale; probes
    /// among them keep their slots until they come back.
    pub(crate) fn reset(&self) {
        let mut w = self.load();
        loop {
            match self.cas(w, w.next(CLOSED)) {
                Ok(()) => break,
                Err(actual) => w = actual,
            }
        }
        if let Some(win) = &*self.window() {
            win.reset();
        }
    }

    fn cas(&self, current: Word, next: Word) -> Result<(), Word> {
        self.word
            .compare_exchange(current.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(Word)
    }
}
