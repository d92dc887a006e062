//! Property test: the lock-free breaker behaves as a plain, obviously correct reference model
//! over random sequences of operations (acquire, record a success / failure / ignored outcome,
//! drop a ticket, advance the paused clock, reset), in both trip modes. After every operation the
//! state, generation, failure count and probes in flight must agree, and so must every admission
//! decision and the wait it reports. Probes in flight count every probe ticket not yet given
//! back, whatever half-open period admitted it.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use resilience_runtime::breaker::{
    Breaker, BreakerConfig, BreakerState, Outcome, Ticket, TripMode,
};

const COOLDOWN: Duration = Duration::from_millis(1_000);

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Record(usize, Outcome),
    Drop(usize),
    Advance(u64),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), prop_oneof![
            3 => Just(Outcome::Failure),
            2 => Just(Outcome::Success),
            1 => Just(Outcome::Ignored),
        ]).prop_map(|(i, o)| Op::Record(i, o)),
        1 => any::<usize>().prop_map(Op::Drop),
        2 => (0u64..1_500).prop_map(Op::Advance),
        1 => Just(Op::Reset),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    let trip = prop_oneof![
        (1u32..5).prop_map(|threshold| TripMode::Consecutive { threshold }),
        (1u32..6, prop_oneof![Just(0.25), Just(0.5), Just(1.0)])
            .prop_map(|(window, ratio)| TripMode::Ratio { window, ratio }),
    ];
    (trip, 1u32..4, 1u32..4).prop_map(|(trip, probes, successes)| {
        BreakerConfig::new()
            .with_trip(trip)
            .with_cooldown(COOLDOWN)
            .with_half_open_probes(probes)
            .with_success_threshold(successes)
    })
}

/// The reference: a plain struct, one method per operation, no atomics, no cleverness.
#[derive(Debug)]
struct Model {
    config: BreakerConfig,
    state: BreakerState,
    generation: u32,
    failures: u64,
    /// Probe tickets not yet recorded or released, of this half-open period or an earlier one.
    probes: u64,
    successes: u64,
    opened_at: Duration,
    now: Duration,
    window: VecDeque<bool>,
    window_calls: u64,
}

#[derive(Debug, Clone, Copy)]
struct ModelTicket {
    generation: u32,
    probe: bool,
}

impl Model {
    fn new(config: BreakerConfig) -> Model {
        Model {
            config,
            state: BreakerState::Closed,
            generation: 0,
            failures: 0,
            probes: 0,
            successes: 0,
            opened_at: Duration::ZERO,
            now: Duration::ZERO,
            window: VecDeque::new(),
            window_calls: 0,
        }
    }

    fn transition(&mut self, to: BreakerState) {
        self.state = to;
        self.generation = self.generation.wrapping_add(1);
        self.failures = 0;
        self.successes = 0;
        if to == BreakerState::Open {
            self.opened_at = self.now;
        }
        if to == BreakerState::Closed {
            self.window.clear();
            self.window_calls = 0;
        }
    }

    fn acquire(&mut self) -> Result<ModelTicket, Duration> {
        match self.state {
            BreakerState::Closed => Ok(ModelTicket {
                generation: self.generation,
                probe: false,
            }),
            BreakerState::Open => {
                let elapsed = self.now - self.opened_at;
                if elapsed < COOLDOWN {
                    return Err(COOLDOWN - elapsed);
                }
                if self.probes >= u64::from(self.config.half_open_probes) {
                    return Err(Duration::ZERO);
                }
                self.transition(BreakerState::HalfOpen);
                self.probes += 1;
                Ok(ModelTicket {
                    generation: self.generation,
                    probe: true,
                })
            }
            BreakerState::HalfOpen => {
                if self.probes >= u64::from(self.config.half_open_probes) {
                    return Err(Duration::ZERO);
                }
                self.probes += 1;
                Ok(ModelTicket {
                    generation: self.generation,
                    probe: true,
                })
            }
        }
    }

    fn record(&mut self, t: ModelTicket, outcome: Outcome) {
        if t.probe {
            // A probe gives its slot back whatever its generation.
            self.probes -= 1;
        }
        if t.generation != self.generation {
            return;
        }
        if t.probe {
            match outcome {
                Outcome::Failure => self.transition(BreakerState::Open),
                Outcome::Ignored => {}
                Outcome::Success => {
                    self.successes += 1;
                    if self.successes >= u64::from(self.config.success_threshold) {
                        self.transition(BreakerState::Closed);
                    }
                }
            }
            return;
        }
        if self.state != BreakerState::Closed || outcome == Outcome::Ignored {
            return;
        }
        let failed = outcome == Outcome::Failure;
        match self.config.trip {
            TripMode::Consecutive { threshold } => {
                if failed {
                    self.failures += 1;
                    if self.failures >= u64::from(threshold) {
                        self.transition(BreakerState::Open);
                    }
                } else {
                    self.failures = 0;
                }
            }
            TripMode::Ratio { window, ratio } => {
                let size = u64::from(window);
                self.window.push_back(failed);
                if self.window.len() as u64 > size {
                    self.window.pop_front();
                }
                self.window_calls += 1;
                // The fewest failures whose share of the window reaches the ratio.
                let threshold = (1..=size)
                    .find(|&n| n as f64 / size as f64 >= ratio)
                    .unwrap_or(size);
                let in_window = self.window.iter().filter(|f| **f).count() as u64;
                // Once full, the window is judged after every outcome, a success included.
                if self.window_calls >= size && in_window >= threshold {
                    self.transition(BreakerState::Open);
                }
            }
            other => panic!("the model has no trip mode {other:?}"),
        }
    }

    fn window_failures(&self) -> u64 {
        match self.config.trip {
            TripMode::Consecutive { .. } => self.failures,
            TripMode::Ratio { .. } => self.window.iter().filter(|f| **f).count() as u64,
            other => panic!("the model has no trip mode {other:?}"),
        }
    }
}

fn check(real: &Breaker, model: &Model, step: usize, op: &Op) -> Result<(), TestCaseError> {
    let ctx = || format!("after step {step} ({op:?}): model {model:?}");
    prop_assert_eq!(real.state(), model.state, "{}", ctx());
    prop_assert_eq!(real.generation(), model.generation, "{}", ctx());
    prop_assert_eq!(real.failures(), model.window_failures(), "{}", ctx());
    prop_assert_eq!(real.probes_in_flight(), model.probes, "{}", ctx());
    prop_assert!(
        model.probes <= u64::from(model.config.half_open_probes),
        "{}",
        ctx()
    );
    Ok(())
}

fn run(config: BreakerConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let real = Breaker::new("model", config);
        let mut model = Model::new(config);
        let mut held: Vec<(Ticket, ModelTicket)> = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Acquire => {
                    let r = real.acquire();
                    let m = model.acquire();
                    match (r, m) {
                        (Ok(t), Ok(mt)) => {
                            prop_assert_eq!(t.is_probe(), mt.probe, "step {}", step);
                            held.push((t, mt));
                        }
                        (Err(d), Err(md)) => prop_assert_eq!(d, md, "step {}", step),
                        (r, m) => prop_assert!(false, "step {step}: real {r:?}, model {m:?}"),
                    }
                }
                Op::Record(i, outcome) if !held.is_empty() => {
                    let (t, mt) = held.swap_remove(i % held.len());
                    real.record(t, *outcome);
                    model.record(mt, *outcome);
                }
                Op::Drop(i) if !held.is_empty() => {
                    let (t, mt) = held.swap_remove(i % held.len());
                    real.release(t);
                    model.record(mt, Outcome::Ignored);
                }
                Op::Record(..) | Op::Drop(_) => {}
                Op::Advance(ms) => {
                    let d = Duration::from_millis(*ms);
                    tokio::time::advance(d).await;
                    model.now += d;
                }
                Op::Reset => {
                    real.reset();
                    model.transition(BreakerState::Closed);
                }
            }
            check(&real, &model, step, op)?;
        }
        // Every ticket given back: no probe slot is left taken.
        for (t, mt) in held.drain(..) {
            real.release(t);
            model.record(mt, Outcome::Ignored);
        }
        prop_assert_eq!(real.probes_in_flight(), 0);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_breaker_matches_the_reference_model(
        config in config(),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(config, ops)?;
    }
}

/// A fixed sequence through the same harness: a success between failures resets the count.
#[test]
fn a_success_between_failures_resets_the_count() {
    let config = BreakerConfig::new()
        .with_failure_threshold(2)
        .with_cooldown(COOLDOWN);
    let ops = vec![
        Op::Acquire,
        Op::Record(0, Outcome::Failure),
        Op::Acquire,
        Op::Record(0, Outcome::Success),
        Op::Acquire,
        Op::Record(0, Outcome::Failure),
    ];
    run(config, ops).unwrap();
}
