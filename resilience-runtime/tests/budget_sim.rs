//! Retry budgets, measured: a deterministic simulation under paused time.
//!
//! Logical calls arrive at a steady rate at a site with `retries = 3` (default backoff, 1s base,
//! 10% proportional jitter) and go through [`execute`] to a simulated dependency that answers
//! after 20 ms. The dependency is either fully down or fails 10% of requests at random (seeded).
//! Each scenario runs twice: with the default retry budget, and with the budget disabled, as
//! peers without budgets behave. Everything is seeded and the clock is paused, so the figures
//! are exact and the same on every run.
//!
//! Figures (recorded in RELIABILITY.md):
//!
//! ```text
//! cargo test -p resilience-runtime --test budget_sim -- --nocapture
//! ```

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use resilience_runtime::backoff::Rng;
use resilience_runtime::breaker::BreakerConfig;
use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::engine::{Hooks, Policy, Site, execute};
use resilience_runtime::{CarriesRejected, ConnectorError, Registry, Rejected};

/// The dependency's error, classified by the derive the way a connector's would be.
#[derive(Debug, Clone, PartialEq, ConnectorError)]
enum E {
    #[connector(transient)]
    Unavailable,
    #[connector(rejected)]
    Rejected(Rejected),
}

/// Without a breaker: the budget is the site's own.
static PLAIN: Site = Site::new(
    &Policy::new("sim", module_path!())
        .with_retries(3)
        .idempotent(),
);

/// With the default breaker: the budget is the breaker's (one per breaker name).
static WITH_BREAKER: Site = Site::new(
    &Policy::new("sim_breaker", module_path!())
        .with_retries(3)
        .idempotent()
        .with_breaker("sim-dependency"),
);

const LATENCY: Duration = Duration::from_millis(20);
/// 20 logical calls a second.
const ARRIVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
enum Fault {
    Outage,
    Random(f64),
}

/// The simulated dependency: counts every request that reaches it.
struct Dependency {
    fault: Fault,
    rng: Rng,
    requests: u64,
}

#[derive(Debug)]
struct Figures {
    calls: u64,
    ok: u64,
    requests: u64,
    /// Requests per logical call in the first 60 s of the run (an outage's first minute).
    first_minute: f64,
    budget_refusals: u64,
}

impl Figures {
    fn amplification(&self) -> f64 {
        self.requests as f64 / self.calls as f64
    }
    fn success(&self) -> f64 {
        self.ok as f64 / self.calls as f64
    }
}

async fn simulate(site: &'static Site, fault: Fault, budget: BudgetConfig, calls: u64) -> Figures {
    let registry = Registry::new().with_seed(7);
    let budget_name = match site.policy().breaker {
        Some(b) => b.to_owned(),
        None => format!("{}::{}", site.policy().module, site.policy().operation),
    };
    registry.configure_budget(&budget_name, budget).unwrap();
    registry
        .configure_breaker("sim-dependency", BreakerConfig::new())
        .unwrap();
    let dep = Rc::new(RefCell::new(Dependency {
        fault,
        rng: Rng::seeded(2024),
        requests: 0,
    }));
    let ok = Rc::new(RefCell::new(0u64));
    let start = tokio::time::Instant::now();
    let first_minute_calls = Rc::new(RefCell::new(0u64));
    let first_minute_requests = Rc::new(RefCell::new(0u64));
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let mut handles = Vec::new();
            for _ in 0..calls {
                let (dep, ok, registry) = (dep.clone(), ok.clone(), registry.clone());
                if start.elapsed() < Duration::from_secs(60) {
                    *first_minute_calls.borrow_mut() += 1;
                }
                let fmr = first_minute_requests.clone();
                handles.push(tokio::task::spawn_local(async move {
                    let r: Result<(), E> = registry
                        .scope(execute(
                            site,
                            Hooks::new().with_from_rejected(E::from_rejected),
                            || {
                                let dep = dep.clone();
                                let fmr = fmr.clone();
                                async move {
                                    let fails = {
                                        let mut d = dep.borrow_mut();
                                        d.requests += 1;
                                        if start.elapsed() < Duration::from_secs(60) {
                                            *fmr.borrow_mut() += 1;
                                        }
                                        match d.fault {
                                            Fault::Outage => true,
                                            Fault::Random(p) => d.rng.unit() < p,
                                        }
                                    };
                                    tokio::time::sleep(LATENCY).await;
                                    if fails { Err(E::Unavailable) } else { Ok(()) }
                                }
                            },
                        ))
                        .await;
                    if r.is_ok() {
                        *ok.borrow_mut() += 1;
                    }
                }));
                tokio::time::sleep(ARRIVAL).await;
            }
            for h in handles {
                h.await.unwrap();
            }
        })
        .await;
    let budget_refusals = registry.budget(&budget_name).exhausted_total();
    let first_calls = *first_minute_calls.borrow();
    let first_requests = *first_minute_requests.borrow();
    let requests = dep.borrow().requests;
    let ok = *ok.borrow();
    Figures {
        calls,
        ok,
        requests,
        first_minute: first_requests as f64 / first_calls as f64,
        budget_refusals,
    }
}

fn report(name: &str, f: &Figures) {
    println!(
        "| {name} | {} | {} | {:.4} | {:.3} | {:.3}% | {} |",
        f.calls,
        f.requests,
        f.amplification(),
        f.first_minute,
        f.success() * 100.0,
        f.budget_refusals
    );
}

const CALLS: u64 = 10_000;

#[tokio::test(start_paused = true)]
async fn a_full_outage_with_the_default_budget_sends_at_most_1_1_requests_per_call() {
    let budget = simulate(&PLAIN, Fault::Outage, BudgetConfig::new(), CALLS).await;
    let none = simulate(&PLAIN, Fault::Outage, BudgetConfig::unlimited(), CALLS).await;
    let breaker = simulate(&WITH_BREAKER, Fault::Outage, BudgetConfig::new(), CALLS).await;
    println!(
        "| scenario | logical calls | requests | requests/call | first 60 s | succeeded | retries refused |"
    );
    report("outage, default budget", &budget);
    report("outage, no budget (peers)", &none);
    report("outage, default budget + default breaker", &breaker);
    assert!(
        budget.amplification() <= 1.1,
        "amplification {}",
        budget.amplification()
    );
    assert!(
        budget.first_minute <= 1.1,
        "first minute {}",
        budget.first_minute
    );
    assert_eq!(none.amplification(), 4.0);
    assert!(breaker.amplification() <= budget.amplification());
    assert_eq!(budget.ok + none.ok + breaker.ok, 0);
}

#[tokio::test(start_paused = true)]
async fn ten_percent_random_failures_leave_at_least_99_9_percent_of_calls_succeeding() {
    let budget = simulate(&PLAIN, Fault::Random(0.10), BudgetConfig::new(), CALLS).await;
    let none = simulate(
        &PLAIN,
        Fault::Random(0.10),
        BudgetConfig::unlimited(),
        CALLS,
    )
    .await;
    let breaker = simulate(
        &WITH_BREAKER,
        Fault::Random(0.10),
        BudgetConfig::new(),
        CALLS,
    )
    .await;
    // Past the budget's design point: a retry costs 5 tokens and a success refunds 1, so above
    // about 17% failures the bucket drains and retries are rationed.
    let heavy = simulate(&PLAIN, Fault::Random(0.30), BudgetConfig::new(), CALLS).await;
    let heavy_none = simulate(
        &PLAIN,
        Fault::Random(0.30),
        BudgetConfig::unlimited(),
        CALLS,
    )
    .await;
    println!(
        "| scenario | logical calls | requests | requests/call | first 60 s | succeeded | retries refused |"
    );
    report("10% failures, default budget", &budget);
    report("10% failures, no budget (peers)", &none);
    report("10% failures, default budget + default breaker", &breaker);
    report("30% failures, default budget", &heavy);
    report("30% failures, no budget (peers)", &heavy_none);
    assert!(budget.success() >= 0.999, "success {}", budget.success());
    assert_eq!(budget.budget_refusals, 0);
    assert!(breaker.success() >= 0.999, "success {}", breaker.success());
    assert!(heavy.amplification() < heavy_none.amplification());
}
