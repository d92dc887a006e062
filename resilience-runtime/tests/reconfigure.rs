//! Reconfiguring after first use: every site sees the change on its next call, instances keep
//! their state, and health shows the very instances the sites use.

use std::sync::Arc;
use std::time::Duration;

use resilience_runtime::breaker::{BreakerConfig, BreakerState, TripMode};
use resilience_runtime::engine::{HookSet, Hooks, Policy, Site, execute};
use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Registry, Rejected};

#[derive(Debug, Clone, PartialEq)]
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

fn hooks() -> impl HookSet<u32, E> {
    Hooks::new().with_from_rejected(E::from_rejected)
}

async fn call(site: &'static Site, ok: bool) -> Result<u32, E> {
    execute(site, hooks(), || async move {
        if ok { Ok(1) } else { Err(E::Down) }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_breaker_configured_after_first_use_applies_to_the_site_and_keeps_its_state() {
    static SITE: Site = Site::new(&Policy::new("rc_breaker", module_path!()).with_breaker("rc"));
    let registry = Registry::new();
    registry
        .scope(async {
            assert_eq!(call(&SITE, true).await, Ok(1));
            let before = registry.breaker("rc");
            assert_eq!(call(&SITE, false).await, Err(E::Down));
            assert_eq!(before.failures(), 1);

            // The site's breaker, reconfigured: the failure counted stays counted, and the next
            // one reaches the new threshold.
            registry
                .configure_breaker(
                    "rc",
                    BreakerConfig::new()
                        .with_failure_threshold(2)
                        .with_cooldown(Duration::from_secs(5)),
                )
                .unwrap();
            assert!(
                Arc::ptr_eq(&before, &registry.breaker("rc")),
                "the same instance"
            );
            assert_eq!(before.failures(), 1);
            assert_eq!(call(&SITE, false).await, Err(E::Down));
            assert_eq!(before.state(), BreakerState::Open);

            // Open, reconfigured: still open, now with the new cooldown.
            registry
                .configure_breaker(
                    "rc",
                    BreakerConfig::new().with_cooldown(Duration::from_secs(1)),
                )
                .unwrap();
            assert_eq!(before.state(), BreakerState::Open);
            assert!(matches!(
                call(&SITE, true).await,
                Err(E::Rejected(Rejected::CircuitOpen { .. }))
            ));
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(call(&SITE, true).await, Ok(1));
            assert_eq!(before.state(), BreakerState::Closed);

            // Health lists the instance the site uses, in its state.
            let h = registry.health();
            let b = h.breakers.iter().find(|b| b.name == "rc").unwrap();
            assert_eq!((b.state, b.opened_total), (BreakerState::Closed, 1));

            // A new trip mode: a full window at the ratio opens it.
            registry
                .configure_breaker(
                    "rc",
                    BreakerConfig::new().with_trip(TripMode::Ratio {
                        window: 4,
                        ratio: 0.5,
                    }),
                )
                .unwrap();
            for ok in [true, false, false, true] {
                let _ = call(&SITE, ok).await;
            }
            assert_eq!(before.state(), BreakerState::Open);
        })
        .await;
}

#[cfg(feature = "config")]
#[tokio::test(start_paused = true)]
async fn a_budget_configured_after_first_use_applies_to_the_site() {
    use resilience_runtime::registry::RegistryConfig;
    use std::sync::atomic::{AtomicU32, Ordering};

    static SITE: Site = Site::new(
        &Policy::new("rc_budget", module_path!())
            .with_breaker("rc_budget")
            .with_retries(3)
            .idempotent(),
    );
    let registry = Registry::new();
    registry
        .configure_breaker(
            "rc_budget",
            BreakerConfig::new().with_failure_threshold(100),
        )
        .unwrap();
    let attempts = AtomicU32::new(0);
    let run = || {
        execute(&SITE, hooks(), || {
            attempts.fetch_add(1, Ordering::Relaxed);
            async { Err::<u32, E>(E::Down) }
        })
    };
    registry
        .scope(async {
            assert_eq!(run().await, Err(E::Down));
            assert_eq!(attempts.swap(0, Ordering::Relaxed), 4, "three retries");
            // A budget that cannot pay one retry, applied from a configuration file.
            let config = RegistryConfig::from_toml_str(
                "[budgets.rc_budget]\ncapacity = 1\nretry_cost = 1\nrefund = 0.1\n",
            )
            .unwrap();
            registry.apply(&config);
            assert_eq!(registry.budget("rc_budget").config().capacity, 1);
            assert_eq!(run().await, Err(E::Down));
            assert_eq!(
                attempts.swap(0, Ordering::Relaxed),
                2,
                "one retry paid, then none"
            );
        })
        .await;
    let m = registry.metrics();
    assert_eq!(m.site("rc_budget").unwrap().metrics.budget_exhausted, 1);
}

#[cfg(feature = "config")]
#[tokio::test(start_paused = true)]
async fn limits_installed_after_first_use_apply_to_the_site() {
    use resilience_runtime::limit::{Bulkhead, ConcurrencyLimit, Gcra};
    use resilience_runtime::registry::RegistryConfig;

    static LIMITED: Site =
        Site::new(&Policy::new("rc_limited", module_path!()).with_rate_limit("rc_rl"));
    static HEADED: Site =
        Site::new(&Policy::new("rc_headed", module_path!()).with_bulkhead("rc_bh"));
    let registry = Registry::new();
    registry.set_rate_limit("rc_rl", Arc::new(Gcra::new(1000, Duration::from_secs(1))));
    let slots = Arc::new(ConcurrencyLimit::new(4));
    registry.set_bulkhead("rc_bh", slots.clone());
    registry
        .scope(async {
            assert_eq!(call(&LIMITED, true).await, Ok(1));
            assert_eq!(call(&HEADED, true).await, Ok(1));

            // One permit a minute, installed after the site's first call.
            registry.set_rate_limit("rc_rl", Arc::new(Gcra::new(1, Duration::from_secs(60))));
            assert_eq!(call(&LIMITED, true).await, Ok(1));
            assert!(matches!(
                call(&LIMITED, true).await,
                Err(E::Rejected(Rejected::RateLimited { .. }))
            ));

            // The bulkhead's cap lowered to one by a configuration file: resized in place.
            let config =
                RegistryConfig::from_toml_str("[bulkheads.rc_bh]\nmax_concurrent = 1\n").unwrap();
            registry.apply(&config);
            assert!(slots.try_enter(), "the instance the site uses");
            assert!(matches!(
                call(&HEADED, true).await,
                Err(E::Rejected(Rejected::BulkheadFull { .. }))
            ));
            slots.leave();
            assert_eq!(call(&HEADED, true).await, Ok(1));
        })
        .await;
}
