//! The configuration file is held to the policy crate's bounds, the ones `#[resilient]` applies at
//! compile time: every value out of bounds is refused at load with the field's whole path, and
//! values at the bounds load (feature `config`).
#![cfg(feature = "config")]

use std::time::Duration;

use resilience_runtime::Registry;
use resilience_runtime::limit::{Gcra, RateLimit};
use resilience_runtime::registry::RegistryConfig;

/// One bad snippet per row: the TOML and the field its error must name.
const BAD: &[(&str, &str)] = &[
    // Breakers: durations.
    (
        "[breakers.graph]\ncooldown = \"0s\"",
        "breakers.graph.cooldown",
    ),
    (
        "[breakers.graph]\ncooldown = \"500us\"",
        "breakers.graph.cooldown",
    ),
    (
        "[breakers.graph]\ncooldown = \"31days\"",
        "breakers.graph.cooldown",
    ),
    (
        "[breakers.graph]\ncooldown = \"600years\"",
        "breakers.graph.cooldown",
    ),
    (
        "[breakers.graph]\nidle_ttl = \"0s\"",
        "breakers.graph.idle_ttl",
    ),
    (
        "[breakers.graph]\nidle_ttl = \"31days\"",
        "breakers.graph.idle_ttl",
    ),
    // Breakers: counts.
    ("[breakers.graph]\nmax_keys = 0", "breakers.graph.max_keys"),
    (
        "[breakers.graph]\nmax_keys = 100000001",
        "breakers.graph.max_keys",
    ),
    (
        "[breakers.graph]\nfailure_threshold = 0",
        "breakers.graph.failure_threshold",
    ),
    (
        "[breakers.graph]\nfailure_threshold = 10001",
        "breakers.graph.failure_threshold",
    ),
    (
        "[breakers.graph]\nwindow = 0\nfailure_ratio = 0.5",
        "breakers.graph.window",
    ),
    (
        "[breakers.graph]\nwindow = 10001\nfailure_ratio = 0.5",
        "breakers.graph.window",
    ),
    (
        "[breakers.graph]\nwindow = 65536\nfailure_ratio = 0.5",
        "breakers.graph.window",
    ),
    (
        "[breakers.graph]\nwindow = 20\nfailure_ratio = 0.0",
        "breakers.graph.failure_ratio",
    ),
    (
        "[breakers.graph]\nwindow = 20\nfailure_ratio = 1.5",
        "breakers.graph.failure_ratio",
    ),
    (
        "[breakers.graph]\nwindow = 20\nfailure_ratio = nan",
        "breakers.graph.failure_ratio",
    ),
    (
        "[breakers.graph]\nhalf_open_probes = 0",
        "breakers.graph.half_open_probes",
    ),
    (
        "[breakers.graph]\nhalf_open_probes = 256",
        "breakers.graph.half_open_probes",
    ),
    (
        "[breakers.graph]\nwindow = 4\nfailure_ratio = 0.5\nhalf_open_probes = 5",
        "breakers.graph.half_open_probes",
    ),
    (
        "[breakers.graph]\nsuccess_threshold = 0",
        "breakers.graph.success_threshold",
    ),
    (
        "[breakers.graph]\nsuccess_threshold = 256",
        "breakers.graph.success_threshold",
    ),
    // Budgets.
    ("[budgets.graph]\ncapacity = 0", "budgets.graph.capacity"),
    (
        "[budgets.graph]\nretry_cost = 0",
        "budgets.graph.retry_cost",
    ),
    (
        "[budgets.graph]\nretry_cost = 101",
        "budgets.graph.retry_cost",
    ),
    ("[budgets.graph]\nrefund = -1.0", "budgets.graph.refund"),
    ("[budgets.graph]\nrefund = 1000.5", "budgets.graph.refund"),
    // Rate limits.
    ("[rate_limits.graph]\nrate = 0", "rate_limits.graph.rate"),
    (
        "[rate_limits.graph]\nrate = 1000000001",
        "rate_limits.graph.rate",
    ),
    (
        "[rate_limits.graph]\nrate = 1\nper = \"600years\"",
        "rate_limits.graph.per",
    ),
    (
        "[rate_limits.graph]\nrate = 1\nper = \"31days\"",
        "rate_limits.graph.per",
    ),
    (
        "[rate_limits.graph]\nrate = 1\nper = \"0s\"",
        "rate_limits.graph.per",
    ),
    (
        "[rate_limits.graph]\nrate = 10\nper = \"100us\"",
        "rate_limits.graph.per",
    ),
    (
        "[rate_limits.graph]\nrate = 10\nmax_keys = 0",
        "rate_limits.graph.max_keys",
    ),
    (
        "[rate_limits.graph]\nrate = 10\nmax_keys = 100000001",
        "rate_limits.graph.max_keys",
    ),
    // Bulkheads.
    (
        "[bulkheads.graph]\nmax_concurrent = 0",
        "bulkheads.graph.max_concurrent",
    ),
];

/// Files the loader cannot read as a configuration at all: each still names its field.
const SHAPES: &[(&str, &str)] = &[
    (
        "[breakers.graph]\ncooldown = \"1s\"\n[breakers.graph]\ncooldown = \"2s\"",
        "breakers.graph",
    ),
    (
        "[breakers.graph]\ncooldown = \"1s\"\ncooldown = \"2s\"",
        "breakers.graph.cooldown",
    ),
    (
        "[budgets.graph]\nrefund_milli = 5",
        "budgets.graph.refund_milli",
    ),
    ("[breakers.graph]\ncooldown = 5", "breakers.graph.cooldown"),
    (
        "[breakers.graph]\ncooldown = \"soon\"",
        "breakers.graph.cooldown",
    ),
    ("[breakers.graph]\nmax_keys = -1", "breakers.graph.max_keys"),
    (
        "[breakers.graph]\nfailure_ratio = 0.5",
        "breakers.graph.window",
    ),
];

#[test]
fn a_file_of_the_wrong_shape_is_refused_with_its_field_named() {
    for (text, field) in SHAPES {
        let err = match RegistryConfig::from_toml_str(text) {
            Ok(_) => panic!("loaded, but should be refused at `{field}`:\n{text}"),
            Err(err) => err,
        };
        assert_eq!(err.field(), *field, "{text}\n{err}");
        assert!(
            err.to_string().starts_with(&format!("`{field}`: ")),
            "{err}"
        );
    }
    // A duplicate says what to do about it.
    let err = RegistryConfig::from_toml_str(SHAPES[0].0).unwrap_err();
    assert!(err.reason().contains("appear once"), "{err}");
}

#[test]
fn a_duration_written_as_a_bare_number_is_refused_with_both_readings() {
    for (text, field, number) in [
        (
            "[sites.\"graph::list\"]\ntimeout = 10",
            "sites.\"graph::list\".timeout",
            "10",
        ),
        (
            "[breakers.graph]\ncooldown = 30",
            "breakers.graph.cooldown",
            "30",
        ),
        (
            "[sites.\"graph::list\"]\nbackoff = { base = 2 }",
            "sites.\"graph::list\".backoff.base",
            "2",
        ),
        (
            "[rate_limits.okta]\nrate = 5\nper = 1",
            "rate_limits.okta.per",
            "1",
        ),
    ] {
        let err = RegistryConfig::from_toml_str(text).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(
            err.reason().contains(&format!(
                "`{number}` has no unit: write \"{number}s\" or \"{number}ms\""
            )),
            "{err}"
        );
    }
}

#[test]
fn both_trip_modes_at_once_are_refused_at_the_ratio_key_written() {
    for (text, field) in [
        (
            "[breakers.graph]\nfailure_threshold = 5\nfailure_ratio = 0.5",
            "breakers.graph.failure_ratio",
        ),
        (
            "[breakers.graph]\nfailure_threshold = 5\nwindow = 20\nfailure_ratio = 0.5",
            "breakers.graph.window",
        ),
    ] {
        let err = RegistryConfig::from_toml_str(text).unwrap_err();
        assert_eq!(err.field(), field, "{err}");
        assert!(err.reason().contains("not both"), "{err}");
    }
}

#[test]
fn every_value_out_of_bounds_is_refused_with_its_field_named() {
    assert!(BAD.len() + SHAPES.len() >= 40);
    for (text, field) in BAD {
        let err = match RegistryConfig::from_toml_str(text) {
            Ok(_) => panic!("loaded, but should be refused at `{field}`:\n{text}"),
            Err(err) => err,
        };
        assert_eq!(err.field(), *field, "{text}\n{err}");
        let message = err.to_string();
        assert!(message.starts_with(&format!("`{field}`: ")), "{message}");
        // The reason says what to write instead, after the problem.
        let key = field.rsplit('.').next().unwrap_or(field);
        assert!(err.reason().contains(&format!("`{key}")), "{message}");
        assert!(err.reason().contains("; "), "{message}");
    }
}

#[test]
fn a_limiter_over_six_hundred_years_is_refused_at_load() {
    let err = RegistryConfig::from_toml_str("[rate_limits.okta]\nrate = 1\nper = \"600years\"\n")
        .unwrap_err();
    assert_eq!(err.field(), "rate_limits.okta.per");
    assert_eq!(
        err.reason(),
        "`per = \"600years\"` is longer than the limit of 30 days; write at most `per = \"30days\"`"
    );
}

#[test]
fn a_window_above_ten_thousand_is_refused_with_the_limit() {
    let err =
        RegistryConfig::from_toml_str("[breakers.graph]\nwindow = 20000\nfailure_ratio = 0.5\n")
            .unwrap_err();
    assert!(
        err.reason()
            .starts_with("`window = 20000` is outside 1..=10000"),
        "{err}"
    );
}

/// Values at the bounds, each row loading on its own.
const GOOD: &[&str] = &[
    "[breakers.graph]\ncooldown = \"1ms\"\nidle_ttl = \"30days\"\nmax_keys = 100000000",
    "[breakers.graph]\ncooldown = \"30days\"\nidle_ttl = \"1ms\"\nmax_keys = 1",
    "[breakers.graph]\nfailure_threshold = 10000\nhalf_open_probes = 255\nsuccess_threshold = 255",
    "[breakers.graph]\nfailure_threshold = 1\nhalf_open_probes = 1\nsuccess_threshold = 1",
    "[breakers.graph]\nwindow = 10000\nfailure_ratio = 1.0\nhalf_open_probes = 255",
    "[breakers.graph]\nwindow = 1\nfailure_ratio = 0.001\nhalf_open_probes = 1",
    "[budgets.graph]\ncapacity = 1\nretry_cost = 1\nrefund = 0.0",
    "[budgets.graph]\ncapacity = 4294967295\nretry_cost = 4294967295\nrefund = 1000.0",
    "[budgets.graph]\ncapacity = 0\nenabled = false",
    "[rate_limits.graph]\nrate = 1000000000\nper = \"1ms\"",
    "[rate_limits.graph]\nrate = 1\nper = \"30days\"\nmax_keys = 100000000",
    "[bulkheads.graph]\nmax_concurrent = 1",
];

#[test]
fn values_at_the_bounds_load() {
    for text in GOOD {
        if let Err(err) = RegistryConfig::from_toml_str(text) {
            panic!("refused at the bound:\n{text}\n{err}");
        }
    }
}

/// The limiters a configuration at the bounds makes are built without overflow, and pace as
/// asked: the slowest gives one permit in 30 days, the fastest a million in a millisecond.
#[tokio::test(start_paused = true)]
async fn limiters_at_the_bounds_are_built_and_pace() {
    let cfg = RegistryConfig::from_toml_str(
        "[rate_limits.slow]\nrate = 1\nper = \"30days\"\n[rate_limits.fast]\nrate = 1000000000\nper = \"1ms\"\n",
    )
    .unwrap();
    Registry::new().apply(&cfg);
    let month = Duration::from_secs(30 * 86_400);
    let slow = Gcra::new(1, month);
    assert!(slow.try_acquire().is_ok());
    assert_eq!(slow.try_acquire().unwrap_err(), month);
    let fast = Gcra::new(1_000_000_000, Duration::from_millis(1));
    assert!((0..1_000_000).all(|_| fast.try_acquire().is_ok()));
}
