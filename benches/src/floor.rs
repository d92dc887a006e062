//! A yardstick, not a product: a hand-written future that does the loads and stores of
//! `#[resilient]`'s fast path with a breaker, and nothing else. Its state is a model of the
//! runtime's (the runtime's own is private), laid out the same way: the site's state behind a
//! `OnceLock`, the breaker and the budget behind pointers, the success counter striped per
//! thread.
//!
//! In order, as the fast path does them: the site's state; the process-wide full-path flag;
//! the `tracing` level check; whether a call's context is installed (nesting); whether the gate
//! is the breaker alone; the breaker's state word. Then a context word installed around the
//! poll, and on success: the breaker's word read again and compared with the closed word of the
//! generation it admitted the call in (a success with failures on record must reset them), the
//! budget's tokens against its cap, and the thread's stripe of the counter.
//!
//! What it leaves out that ours does: the caller's future and the attempt's (their states,
//! stored and reloaded), the call's slot, the correlation id's cell (swapped back to unset when
//! the attempt returns), the guard that restores the context and counts a panic when the attempt
//! unwinds, and the step that carries the result out of the engine.
//!
//! [`fewest`] goes further down: the checks of this floor with every merge we could think of
//! already made, a bound on what any implementation of the same features could do.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use crate::BenchError;

/// The process-wide full-path flag.
static FULL_PATH: AtomicU8 = AtomicU8::new(0);

/// A breaker: a state word, and a sliding window when it counts by rate (none here).
struct Breaker {
    window: Option<Box<u64>>,
    word: AtomicU64,
}

/// A retry budget: tokens, refunded up to a cap.
struct Budget {
    tokens: AtomicU64,
    cap: u64,
}

/// A site's state.
struct State {
    simple_gate: bool,
    breaker: Option<Box<Breaker>>,
    budget: Box<Budget>,
    /// Eight owned stripes and a shared one, a cache line (16 words) apart.
    ok: [AtomicU64; 9 * 16],
}

static SITE: OnceLock<&'static State> = OnceLock::new();

thread_local! {
    /// The installed context's site (non-zero inside a call).
    static ACTIVE: Cell<usize> = const { Cell::new(0) };
    /// This thread's stripe.
    static STRIPE: Cell<usize> = const { Cell::new(0) };
}

/// The breaker's generation bits in its word; a closed word with no failures is its generation
/// alone.
const GENERATION: u64 = 0xFFFF_FFFF;
/// The breaker's state bits (open, half-open) in its word.
const NOT_CLOSED: u64 = 0x3_0000_0000;

#[cold]
#[inline(never)]
fn state() -> &'static State {
    SITE.get_or_init(|| {
        Box::leak(Box::new(State {
            simple_gate: true,
            breaker: Some(Box::new(Breaker {
                window: None,
                word: AtomicU64::new(0),
            })),
            budget: Box::new(Budget {
                tokens: AtomicU64::new(10),
                cap: 10,
            }),
            ok: std::array::from_fn(|_| AtomicU64::new(0)),
        }))
    })
}

/// Off the fast path (never taken in the benchmark).
#[cold]
#[inline(never)]
fn full_path<T>(_: T) -> Poll<Result<u64, BenchError>> {
    Poll::Ready(Err(BenchError::Transient))
}

pin_project_lite::pin_project! {
    /// The hand-written future around one attempt.
    pub struct Floor<F> {
        #[pin]
        attempt: F,
    }
}

impl<F: Future<Output = Result<u64, BenchError>>> Future for Floor<F> {
    type Output = Result<u64, BenchError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let st = match SITE.get() {
            Some(s) => *s,
            None => state(),
        };
        if FULL_PATH.load(Relaxed) != 0
            || tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
            || ACTIVE.with(|a| a.get() != 0)
            || !st.simple_gate
        {
            return full_path(());
        }
        let Some(b) = st.breaker.as_deref() else {
            return full_path(());
        };
        let word = b.word.load(Relaxed);
        if word & NOT_CLOSED != 0 {
            return full_path(());
        }
        ACTIVE.with(|a| a.set(1));
        let poll = self.project().attempt.poll(cx);
        ACTIVE.with(|a| a.set(0));
        match poll {
            Poll::Ready(Ok(v)) => {
                if b.window.is_some() || b.word.load(Relaxed) != word & GENERATION {
                    return full_path(v);
                }
                if st.budget.tokens.load(Relaxed) < st.budget.cap {
                    return full_path(v);
                }
                let i = STRIPE.with(|s| s.get());
                if i >= 8 {
                    return full_path(v);
                }
                let c = &st.ok[(i + 1) * 16];
                c.store(c.load(Relaxed) + 1, Relaxed);
                Poll::Ready(Ok(v))
            }
            other => full_path(other),
        }
    }
}

/// The same operation as every variant's, in the hand-written future; `#[inline(never)]` as
/// the annotated variants are.
#[inline(never)]
pub fn floor() -> Floor<impl Future<Output = Result<u64, BenchError>>> {
    Floor {
        attempt: async { Ok(std::hint::black_box(1)) },
    }
}

/// A second yardstick, below the first: the fewest loads and stores any implementation of the
/// same features could make, with every merge we could think of already made. The site's state
/// is one pointer (no `OnceLock`); the process-wide full-path flag is folded into it (a site
/// would publish no pointer while the full path is forced); a breaker with failures on record,
/// a sliding window or a state other than closed all show in one word, read once (a success is
/// then placed at the gate, when nothing was on record); the budget keeps its deficit, not its
/// tokens; the nesting word and the thread's stripe share one thread-local. What is left: the
/// site's pointer, the `tracing` level, the nesting word (read, set, cleared), the breaker's
/// word, the budget's deficit and the counter's stripe.
pub mod fewest {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::AtomicPtr;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    use std::task::{Context, Poll};

    use super::full_path;
    use crate::BenchError;

    /// A site's state.
    struct State {
        /// Zero when closed with nothing on record and no window.
        breaker: AtomicU64,
        /// Tokens the budget lacks (a success refunds only when there are some).
        deficit: AtomicU64,
        /// Eight owned stripes and a shared one, a cache line (16 words) apart.
        ok: [AtomicU64; 9 * 16],
    }

    static SITE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());

    thread_local! {
        /// The installed context's site (non-zero inside a call) and this thread's stripe.
        static THREAD: (Cell<usize>, Cell<usize>) = const { (Cell::new(0), Cell::new(0)) };
    }

    #[cold]
    #[inline(never)]
    fn state() -> &'static State {
        let s: &'static State = Box::leak(Box::new(State {
            breaker: AtomicU64::new(0),
            deficit: AtomicU64::new(0),
            ok: std::array::from_fn(|_| AtomicU64::new(0)),
        }));
        // Release: a thread that loads the pointer (Acquire) sees the state it points to.
        SITE.store(std::ptr::from_ref(s).cast_mut(), Release);
        s
    }

    pin_project_lite::pin_project! {
        /// The hand-written future around one attempt.
        pub struct Fewest<F> {
            #[pin]
            attempt: F,
        }
    }

    impl<F: Future<Output = Result<u64, BenchError>>> Future for Fewest<F> {
        type Output = Result<u64, BenchError>;

        #[inline(always)]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let p = SITE.load(Acquire);
            let st: &'static State = if p.is_null() {
                state()
            } else {
                // SAFETY: the only non-null value `SITE` ever holds is the pointer `state`
                // stores: a leaked `Box`, never freed or written through (its fields are atomics,
                // shared by `&`), so valid for `'static`; the Acquire load pairs with that
                // Release store, so the `State` it points to is initialized for this thread.
                unsafe { &*p }
            };
            if tracing::Level::INFO <= tracing::level_filters::LevelFilter::current()
                || THREAD.with(|t| t.0.get() != 0)
                || st.breaker.load(Relaxed) != 0
            {
                return full_path(());
            }
            THREAD.with(|t| t.0.set(1));
            let poll = self.project().attempt.poll(cx);
            THREAD.with(|t| t.0.set(0));
            match poll {
                Poll::Ready(Ok(v)) => {
                    if st.deficit.load(Relaxed) != 0 {
                        return full_path(v);
                    }
                    let i = THREAD.with(|t| t.1.get());
                    if i >= 8 {
                        return full_path(v);
                    }
                    let c = &st.ok[(i + 1) * 16];
                    c.store(c.load(Relaxed) + 1, Relaxed);
                    Poll::Ready(Ok(v))
                }
                other => full_path(other),
            }
        }
    }

    /// The same operation as every variant's, in the hand-written future.
    #[inline(never)]
    pub fn fewest() -> Fewest<impl Future<Output = Result<u64, BenchError>>> {
        Fewest {
            attempt: async { Ok(std::hint::black_box(1)) },
        }
    }
}
