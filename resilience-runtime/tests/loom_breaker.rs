//! Loom models of the breaker's state machine: trip, probe admission, close, stale generations,
//! and probes that outlive their half-open period.
//!
//! The machine's source (`src/breaker/machine.rs`) is compiled here a second time with loom's
//! atomics in place of std's (it imports them from `super::sync`), so loom explores every
//! interleaving and memory ordering of the real code, with no `--cfg loom` and no RUSTFLAGS.
//! The machine reads no clock: each thread passes its own time, so races between threads that
//! read the clock at different moments are modelled too. Each model runs in a few seconds.

use std::time::Duration;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
}

#[allow(dead_code, unreachable_pub)]
#[path = "../src/breaker/machine.rs"]
mod machine;

use machine::{CLOSED, HALF_OPEN, Limits, Machine, OPEN, Outcome, Transition, Window};

const COOLDOWN: u64 = 100;

fn machine(threshold: u64, probes: u64, successes: u64) -> Machine {
    Machine::new(Limits::new(threshold, COOLDOWN, probes, successes), None)
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(3, f);
}

/// Runs `f` under loom with at most `preemptions` forced context switches per execution (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): enough to find the races below, small enough that each
/// model runs in seconds.
fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(preemptions);
    }
    b.check(f);
}

/// Opens `m` (threshold 1) at time `at` from the closed state, single-threaded.
fn open_at(m: &Machine, at: u64) {
    let (t, _) = m.acquire(|| at).unwrap();
    let tr = m.record(t, Outcome::Failure, || at);
    assert_eq!(tr.map(|t| t.to), Some(OPEN));
}

/// Two failures race to open the breaker, each having read the clock at a different time, while
/// a third thread asks to call through after the earlier time's cooldown. Exactly one opening
/// wins; the opening time is the winner's, never the loser's; and a probe is never admitted
/// before the winner's cooldown has elapsed.
#[test]
fn racing_trips_open_once_with_the_winners_time() {
    model(|| {
        let m = Arc::new(machine(1, 1, 1));
        let (t1, _) = m.acquire(|| 0).unwrap();
        let (t2, _) = m.acquire(|| 0).unwrap();
        let a = {
            let m = m.clone();
            thread::spawn(move || m.record(t1, Outcome::Failure, || 10))
        };
        let b = {
            let m = m.clone();
            thread::spawn(move || m.record(t2, Outcome::Failure, || 20))
        };
        let reader = {
            let m = m.clone();
            thread::spawn(move || m.acquire(|| 15 + COOLDOWN).ok())
        };
        let (ta, tb) = (a.join().unwrap(), b.join().unwrap());
        let probe = reader.join().unwrap();
        let winners: Vec<Transition> = [ta, tb].into_iter().flatten().collect();
        assert_eq!(winners.len(), 1, "exactly one thread opens the breaker");
        let won = winners[0];
        assert_eq!((won.from, won.to), (CLOSED, OPEN));
        if let Some((t, tr)) = probe {
            if t.is_probe() {
                // The reader came after the opening: a probe is admitted only once the
                // winner's cooldown is over.
                assert_eq!(won.at, 10, "probe admitted before the cooldown ended");
                assert_eq!(tr.map(|t| t.to), Some(HALF_OPEN));
            } else {
                // The reader came before the opening: a closed-generation ticket.
                assert_eq!(t.generation(), 0);
            }
        }
        if m.state() == OPEN {
            assert_eq!(m.generation(), 1);
            assert_eq!(m.opened_at(), Some(won.at));
            assert_eq!(
                m.acquire(|| won.at + COOLDOWN - 1).unwrap_err(),
                Duration::from_nanos(1)
            );
        } else {
            assert_eq!((m.state(), m.generation()), (HALF_OPEN, 2));
        }
    });
}

/// A failure that would open the breaker races a success that resets the count. Either the
/// failure opens it first (and the success is stale), or the success resets first and the failure
/// still counts: a failure is never lost to the race.
#[test]
fn a_failure_racing_a_success_is_never_lost() {
    model(|| {
        let m = Arc::new(machine(2, 1, 1));
        let (t0, _) = m.acquire(|| 0).unwrap();
        assert_eq!(m.record(t0, Outcome::Failure, || 0), None);
        let (tf, _) = m.acquire(|| 0).unwrap();
        let (ts, _) = m.acquire(|| 0).unwrap();
        let f = {
            let m = m.clone();
            thread::spawn(move || m.record(tf, Outcome::Failure, || 1))
        };
        let s = {
            let m = m.clone();
            thread::spawn(move || m.record(ts, Outcome::Success, || 1))
        };
        let opened = f.join().unwrap();
        assert_eq!(s.join().unwrap(), None);
        match opened {
            Some(tr) => {
                assert_eq!((tr.from, tr.to), (CLOSED, OPEN));
                assert_eq!((m.state(), m.generation()), (OPEN, 1));
            }
            None => {
                assert_eq!((m.state(), m.generation()), (CLOSED, 0));
                assert_eq!(m.failures(), 1, "the failure was lost");
            }
        }
    });
}

/// After the cooldown, three callers race for two probe slots. At most two are admitted; the
/// first probe to fail reopens the breaker, one success closes it, and whatever the order, no
/// probe slot is left taken and the generation counts every transition.
#[test]
fn probe_admission_is_bounded_and_every_slot_comes_back() {
    // Four threads: two preemptions already cover every order of the three callers' steps.
    model_bounded(2, || {
        let m = Arc::new(machine(1, 2, 1));
        open_at(&m, 0);
        let outcomes = [Outcome::Success, Outcome::Failure, Outcome::Ignored];
        let threads: Vec<_> = outcomes
            .into_iter()
            .map(|outcome| {
                let m = m.clone();
                thread::spawn(move || {
                    let mut transitions = Vec::new();
                    match m.acquire(|| COOLDOWN) {
                        Ok((t, tr)) => {
                            transitions.extend(tr);
                            transitions.extend(m.record(t, outcome, || COOLDOWN));
                            (true, t.is_probe(), transitions)
                        }
                        Err(wait) => {
                            // Half-open and full, or just reopened by a failed probe.
                            assert!(
                                wait == Duration::ZERO || wait == Duration::from_nanos(COOLDOWN),
                                "{wait:?}"
                            );
                            (false, false, transitions)
                        }
                    }
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let admitted = results.iter().filter(|r| r.0).count();
        assert!(admitted >= 1);
        let transitions: Vec<Transition> =
            results.iter().flat_map(|r| r.2.iter().copied()).collect();
        // One open -> half-open, then at most one way out of half-open.
        let half_opened = transitions.iter().filter(|t| t.to == HALF_OPEN).count();
        assert_eq!(half_opened, 1);
        let out: Vec<_> = transitions.iter().filter(|t| t.from == HALF_OPEN).collect();
        assert!(out.len() <= 1, "left half-open twice: {out:?}");
        // A closed-generation ticket (admitted after a probe closed the breaker) may open it again.
        let reopened_from_closed = transitions.iter().filter(|t| t.from == CLOSED).count();
        assert_eq!(
            u64::from(m.generation()),
            1 + transitions.len() as u64,
            "{transitions:?}"
        );
        assert!(reopened_from_closed <= 1);
        // Every ticket was recorded: whatever the state, no probe slot is left taken.
        assert_eq!(m.probes(), 0, "a probe slot leaked");
        if m.state() == OPEN {
            assert_eq!(m.opened_at(), Some(COOLDOWN));
        }
        assert!(results.iter().filter(|r| r.1).count() <= 3);
    });
}

/// Two probes are out when one of them fails and reopens the breaker; the other, now stale, is
/// given back while a caller asks for two probes after the next cooldown. The stale probe keeps
/// its slot until it is given back, so probes in flight never exceed the limit across the two
/// half-open periods, and every slot comes back.
#[test]
fn a_stale_probe_keeps_its_slot_across_a_reopen() {
    model(|| {
        let m = Arc::new(machine(1, 2, 1));
        open_at(&m, 0);
        let (a, _) = m.acquire(|| COOLDOWN).unwrap();
        let (b, _) = m.acquire(|| COOLDOWN).unwrap();
        assert!(a.is_probe() && b.is_probe());
        // Probe tickets surely out: counted once admitted, uncounted before they go back, so
        // never more than are truly in flight.
        let out = Arc::new(AtomicU64::new(2));
        let reopener = {
            let (m, out) = (m.clone(), out.clone());
            thread::spawn(move || {
                out.fetch_sub(1, Ordering::SeqCst);
                m.record(b, Outcome::Failure, || COOLDOWN)
            })
        };
        let stale = {
            let (m, out) = (m.clone(), out.clone());
            thread::spawn(move || {
                out.fetch_sub(1, Ordering::SeqCst);
                m.record(a, Outcome::Ignored, || COOLDOWN)
            })
        };
        let caller = {
            let (m, out) = (m.clone(), out.clone());
            thread::spawn(move || {
                let mut held = Vec::new();
                for _ in 0..2 {
                    if let Ok((t, _)) = m.acquire(|| 2 * COOLDOWN) {
                        assert!(t.is_probe());
                        let n = out.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= 2, "{n} probes in flight");
                        held.push(t);
                    }
                }
                held
            })
        };
        let reopened = reopener.join().unwrap();
        assert_eq!(reopened.map(|t| (t.from, t.to)), Some((HALF_OPEN, OPEN)));
        assert_eq!(stale.join().unwrap(), None);
        let held = caller.join().unwrap();
        assert_eq!(m.probes(), held.len() as u64, "a probe slot leaked");
        for t in held {
            m.record(t, Outcome::Ignored, || 2 * COOLDOWN);
        }
        assert_eq!(m.probes(), 0, "a probe slot leaked");
    });
}

/// In ratio mode, a failure that fills the window at the ratio races a stale probe giving its
/// slot back (the probe was out when an operator reset the breaker). The slot changes the word
/// the failure's opening expected, but the breaker still opens, and the slot still comes back.
#[test]
fn a_stale_probe_given_back_does_not_lose_a_ratio_trip() {
    model(|| {
        let limits = Limits::new(u64::MAX, COOLDOWN, 1, 1);
        let m = Arc::new(Machine::new(limits, Some(Window::new(1, 1.0))));
        open_at(&m, 0);
        let (probe, _) = m.acquire(|| COOLDOWN).unwrap();
        assert!(probe.is_probe());
        m.reset();
        assert_eq!((m.state(), m.probes()), (CLOSED, 1));
        let (t, _) = m.acquire(|| COOLDOWN).unwrap();
        let tripper = {
            let m = m.clone();
            thread::spawn(move || m.record(t, Outcome::Failure, || COOLDOWN + 1))
        };
        let stale = {
            let m = m.clone();
            thread::spawn(move || m.record(probe, Outcome::Success, || COOLDOWN + 1))
        };
        let tripped = tripper.join().unwrap();
        assert_eq!(stale.join().unwrap(), None);
        assert_eq!(tripped.map(|t| (t.from, t.to)), Some((CLOSED, OPEN)));
        assert_eq!((m.state(), m.probes()), (OPEN, 0));
        assert_eq!(m.opened_at(), Some(COOLDOWN + 1));
    });
}

/// A slow call admitted in the first closed epoch fails after the breaker has opened, gone
/// half-open and is closing: its stale result changes nothing, while a new caller's failure in
/// the new closed epoch still counts.
#[test]
fn stale_generations_are_ignored_while_closing() {
    model(|| {
        let m = Arc::new(machine(1, 1, 1));
        let (old, _) = m.acquire(|| 0).unwrap();
        open_at(&m, 0);
        let (probe, tr) = m.acquire(|| COOLDOWN).unwrap();
        assert!(probe.is_probe());
        assert_eq!(tr.map(|t| t.to), Some(HALF_OPEN));
        assert_eq!(m.generation(), 2);

        let closer = {
            let m = m.clone();
            thread::spawn(move || m.record(probe, Outcome::Success, || COOLDOWN))
        };
        let stale = {
            let m = m.clone();
            thread::spawn(move || m.record(old, Outcome::Failure, || COOLDOWN))
        };
        let newcomer = {
            let m = m.clone();
            thread::spawn(move || match m.acquire(|| COOLDOWN) {
                Ok((t, _)) => {
                    assert!(!t.is_probe(), "a second probe while one is in flight");
                    m.record(t, Outcome::Failure, || COOLDOWN + 1)
                }
                Err(wait) => {
                    assert_eq!(wait, Duration::ZERO);
                    None
                }
            })
        };
        let closed = closer.join().unwrap();
        assert_eq!(closed.map(|t| (t.from, t.to)), Some((HALF_OPEN, CLOSED)));
        assert_eq!(
            stale.join().unwrap(),
            None,
            "a stale result moved the breaker"
        );
        match newcomer.join().unwrap() {
            Some(tr) => {
                assert_eq!((tr.from, tr.to), (CLOSED, OPEN));
                assert_eq!((m.state(), m.generation()), (OPEN, 4));
                assert_eq!(m.opened_at(), Some(COOLDOWN + 1));
            }
            None => {
                assert_eq!((m.state(), m.generation()), (CLOSED, 3));
                assert_eq!(m.failures(), 0);
            }
        }
        assert_eq!(m.probes(), 0);
    });
}

/// An operator's reset racing a trip never loses either: the generation counts both.
#[test]
fn reset_racing_a_trip_counts_both() {
    model(|| {
        let m = Arc::new(machine(1, 1, 1));
        let (t, _) = m.acquire(|| 0).unwrap();
        let tripper = {
            let m = m.clone();
            thread::spawn(move || m.record(t, Outcome::Failure, || 5))
        };
        let resetter = {
            let m = m.clone();
            thread::spawn(move || m.reset())
        };
        let tripped = tripper.join().unwrap();
        resetter.join().unwrap();
        let expected = if tripped.is_some() { 2 } else { 1 };
        assert_eq!(m.generation(), expected);
        assert_eq!(m.state(), CLOSED);
    });
}
