//! A panicking event sink changes nothing: the breaker's state and the probe it admitted, and the
//! count of a call that gave up, are complete before any sink runs.
//!
//! Event sinks are process-wide, so this binary holds one test.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use resilience_runtime::breaker::{BreakerConfig, BreakerState, Outcome};
use resilience_runtime::engine::{Hooks, Policy, Site, execute};
use resilience_runtime::events::{self, EventSink, RuntimeEvent};
use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Registry, Rejected};

#[derive(Debug)]
enum E {
    Down,
    Rejected(Rejected),
}

impl Classify for E {
    fn class(&self) -> ErrorClass {
        match self {
            E::Down => ErrorClass::Transient,
            E::Rejected(r) => r.class(),
        }
    }
}

impl CarriesRejected for E {
    fn from_rejected(r: Rejected) -> Self {
        E::Rejected(r)
    }
    fn rejected(&self) -> Option<&Rejected> {
        match self {
            E::Rejected(r) => Some(r),
            E::Down => None,
        }
    }
}

/// Panics on the events it is told to, after counting them.
#[derive(Debug, Default)]
struct Panicking {
    half_open: AtomicU32,
    gave_up: AtomicU32,
}

impl EventSink for Panicking {
    fn on_event(&self, event: &RuntimeEvent<'_>) {
        match event {
            RuntimeEvent::BreakerTransition {
                to: BreakerState::HalfOpen,
                ..
            } => {
                self.half_open.fetch_add(1, Ordering::Relaxed);
                panic!("sink fails on half-open");
            }
            RuntimeEvent::GaveUp { .. } => {
                self.gave_up.fetch_add(1, Ordering::Relaxed);
                panic!("sink fails on gave-up");
            }
            _ => {}
        }
    }
}

/// Delivered after the panicking sink: it still sees every event.
#[derive(Debug, Default)]
struct Counting(AtomicU32);

impl EventSink for Counting {
    fn on_event(&self, _: &RuntimeEvent<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_sink_changes_nothing() {
    let panicking = Arc::new(Panicking::default());
    let counting = Arc::new(Counting::default());
    let sinks: [Arc<dyn EventSink>; 2] = [panicking.clone(), counting.clone()];
    for s in &sinks {
        events::add_sink(s.clone());
    }

    // The open -> half-open transition: the probe's ticket reaches the caller, and its success
    // closes the breaker.
    let registry = Registry::new();
    registry
        .configure_breaker(
            "sink",
            BreakerConfig::new()
                .with_failure_threshold(1)
                .with_cooldown(Duration::from_secs(1)),
        )
        .unwrap();
    let b = registry.breaker("sink");
    let t = b.acquire().unwrap();
    b.record(t, Outcome::Failure);
    assert_eq!(b.state(), BreakerState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    let probe = b
        .acquire()
        .expect("the probe is admitted though the sink panicked");
    assert!(probe.is_probe());
    assert_eq!(panicking.half_open.load(Ordering::Relaxed), 1);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.probes_in_flight(), 1);
    b.record(probe, Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);

    // A call that gives up is returned to its caller and counted once.
    static SITE: Site = Site::new(&Policy::new("sink_gave_up", module_path!()));
    let r: Result<u32, E> = registry
        .scope(execute(
            &SITE,
            Hooks::new().with_from_rejected(E::from_rejected),
            || async { Err(E::Down) },
        ))
        .await;
    assert!(matches!(r, Err(E::Down)), "{r:?}");
    assert_eq!(panicking.gave_up.load(Ordering::Relaxed), 1);
    let m = registry.metrics();
    let s = &m.site("sink_gave_up").unwrap().metrics;
    assert_eq!(s.errors.transient, 1);
    assert_eq!(s.calls(), 1, "counted once: {s:?}");

    // The other sink saw every event: three transitions and the gave-up.
    assert_eq!(counting.0.load(Ordering::Relaxed), 4);
    for s in &sinks {
        events::remove_sink(s);
    }
}
