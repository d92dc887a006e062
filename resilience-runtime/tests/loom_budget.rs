//! Loom models of the retry budget's token bucket.
//!
//! The bucket's source (`src/budget/bucket.rs`) is compiled here with loom's atomics in place of
//! std's (it imports them from `super::sync`), so no `--cfg loom` or RUSTFLAGS are needed.

use loom::sync::Arc;
use loom::thread;

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
}

#[allow(dead_code, unreachable_pub)]
#[path = "../src/budget/bucket.rs"]
mod bucket;

use bucket::Bucket;

const TOKEN: u64 = 1_000;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

/// Two retries race for the last token: exactly one is paid for, the other is refused and
/// counted, and the bucket never goes below zero.
#[test]
fn racing_spends_never_overdraw() {
    model(|| {
        let b = Arc::new(Bucket::new(TOKEN));
        let spenders: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.try_spend(TOKEN))
            })
            .collect();
        let paid = spenders
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(paid, 1);
        assert_eq!(b.tokens(), 0);
        assert_eq!(b.exhausted(), 1);
    });
}

/// Spends race a refund: tokens are conserved (what is left plus what was spent is what there
/// was plus what the refund added), and the refund never lifts the bucket above its capacity.
#[test]
fn spends_and_a_refund_conserve_tokens() {
    model(|| {
        let b = Arc::new(Bucket::new(TOKEN));
        let spenders: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.try_spend(TOKEN))
            })
            .collect();
        let refunder = {
            let b = b.clone();
            thread::spawn(move || b.refund(TOKEN, TOKEN))
        };
        let paid = spenders
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count() as u64;
        refunder.join().unwrap();
        let left = b.tokens();
        assert!(left <= TOKEN, "overfilled: {left}");
        // The refund adds a whole token or (bucket full at the time) nothing.
        let refunded = left + paid * TOKEN - TOKEN;
        assert!(
            refunded == 0 || refunded == TOKEN,
            "left {left}, paid {paid}"
        );
        assert_eq!(paid + b.exhausted(), 2);
    });
}

/// Two refunds race near the top: the bucket ends exactly full, never above.
#[test]
fn racing_refunds_stop_at_capacity() {
    model(|| {
        let cap = 2 * TOKEN;
        let b = Arc::new(Bucket::new(cap - TOKEN / 2));
        let refunds: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                thread::spawn(move || b.refund(TOKEN, cap))
            })
            .collect();
        for r in refunds {
            r.join().unwrap();
        }
        assert_eq!(b.tokens(), cap);
    });
}
