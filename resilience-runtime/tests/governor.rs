//! governor-backed rate limits on the runtime's (paused) clock (feature `governor`).
#![cfg(feature = "governor")]

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use resilience_runtime::engine::{Hooks, Policy, Site, execute};
use resilience_runtime::governor::{GovernorLimit, KeyedGovernorLimit};
use resilience_runtime::limit::RateLimit;
use resilience_runtime::{Registry, Rejected};

fn per_second(n: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(n).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_governor_limit_follows_the_paused_tokio_clock() {
    let rl = GovernorLimit::new(per_second(2));
    rl.try_acquire().unwrap();
    rl.try_acquire().unwrap();
    let wait = rl.try_acquire().unwrap_err();
    assert_eq!(wait, Duration::from_millis(500));
    tokio::time::advance(Duration::from_millis(499)).await;
    assert_eq!(rl.try_acquire().unwrap_err(), Duration::from_millis(1));
    tokio::time::advance(Duration::from_millis(1)).await;
    rl.try_acquire().unwrap();
}

static SEND: Site = Site::new(
    &Policy::new("send_message", "slack::client")
        .with_rate_limit("slack")
        .with_deadline(Duration::from_secs(10)),
);
static SEND_NOW: Site =
    Site::new(&Policy::new("send_now", "slack::client").with_rate_limit("slack"));

#[tokio::test(start_paused = true)]
async fn a_site_naming_the_limit_waits_for_permits_and_counts_them() {
    let registry = Registry::new();
    registry.set_rate_limit("slack", Arc::new(GovernorLimit::new(per_second(1))));
    let start = tokio::time::Instant::now();
    registry
        .scope(async {
            for _ in 0..3 {
                let r: Result<(), Rejected> =
                    execute(&SEND, Hooks::new().with_from_rejected(|r| r), || async { Ok(()) }).await;
                r.unwrap();
            }
            // Without a deadline there is no waiting: the call is rejected with the wait.
            let r: Result<(), Rejected> =
                execute(&SEND_NOW, Hooks::new().with_from_rejected(|r| r), || async { Ok(()) }).await;
            assert!(matches!(r, Err(Rejected::RateLimited { retry_in, .. }) if retry_in == Duration::from_secs(1)));
        })
        .await;
    // One permit per second: the third call went out two seconds after the first.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let m = registry.metrics();
    let send = &m.site("send_message").unwrap().metrics;
    assert_eq!(
        (send.ok, send.rate_limit_allowed, send.rate_limit_blocked),
        (3, 3, 2)
    );
    assert_eq!(m.site("send_now").unwrap().metrics.rate_limit_blocked, 1);
}

#[tokio::test(start_paused = true)]
async fn keyed_limits_are_per_tenant_and_bounded() {
    let limits = Arc::new(KeyedGovernorLimit::new(per_second(1), 2));
    let key = |s: &str| s.to_owned();
    limits.try_acquire_key(&key("contoso")).unwrap();
    assert!(limits.try_acquire_key(&key("contoso")).is_err());
    limits.try_acquire_key(&key("fabrikam")).unwrap(); // another tenant has its own quota
    assert_eq!(limits.len(), 2);

    // Full: a new tenant evicts the least recently used one, which starts again with a full
    // quota when it comes back.
    limits.try_acquire_key(&key("northwind")).unwrap();
    assert_eq!((limits.len(), limits.key_evictions()), (2, 1));
    limits.try_acquire_key(&key("contoso")).unwrap();
    assert_eq!((limits.len(), limits.key_evictions()), (2, 2));
    tokio::time::advance(Duration::from_secs(2)).await;

    // One tenant's limit as a `RateLimit`, installable under a name.
    let contoso = limits.for_key("contoso");
    contoso.try_acquire().unwrap();
    assert_eq!(contoso.try_acquire().unwrap_err(), Duration::from_secs(1));
}

static PER_TENANT: Site = Site::new(
    &Policy::new("list_users", "okta::client")
        .with_breaker("okta")
        .with_keyed_breaker()
        .with_rate_limit("okta"),
);

#[tokio::test(start_paused = true)]
async fn a_site_with_a_breaker_key_draws_on_its_tenants_quota() {
    let registry = Registry::new();
    registry.set_rate_limit(
        "okta",
        Arc::new(KeyedGovernorLimit::new(per_second(1), 100)),
    );
    registry
        .scope(async {
            call_for("contoso").await.unwrap();
            // contoso's quota is spent; fabrikam's is not.
            assert!(matches!(
                call_for("contoso").await,
                Err(Rejected::RateLimited { .. })
            ));
            call_for("fabrikam").await.unwrap();
        })
        .await;
}

#[cfg(feature = "config")]
#[tokio::test(start_paused = true)]
async fn a_configuration_file_makes_a_per_tenant_governor_limit() {
    use resilience_runtime::registry::RegistryConfig;
    let cfg = RegistryConfig::from_toml_str(
        "[rate_limits.okta]\nrate = 1\nper = \"1s\"\nper_key = true\nmax_keys = 100\n",
    )
    .unwrap();
    let registry = Registry::new();
    registry.apply(&cfg);
    registry
        .scope(async {
            call_for("contoso").await.unwrap();
            assert!(matches!(
                call_for("contoso").await,
                Err(Rejected::RateLimited { .. })
            ));
            call_for("fabrikam").await.unwrap();
            tokio::time::advance(Duration::from_secs(1)).await;
            call_for("contoso").await.unwrap();
        })
        .await;
}

/// One call of the per-tenant site for `tenant`, driven through the engine as the macro does.
async fn call_for(tenant: &'static str) -> Result<(), Rejected> {
    use resilience_runtime::engine::Execution;
    Execution::new(&PER_TENANT, Hooks::new().with_from_rejected(|r| r))
        .breaker_key(tenant)
        .run(|| async { Ok::<(), Rejected>(()) })
        .await
}
