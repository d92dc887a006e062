//! `[backends.<name>]` tables and the keys that put instances on them: a bad one is refused at
//! load, naming its field.
#![cfg(feature = "redis")]

use std::time::Duration;

use resilience_runtime::Registry;
use resilience_runtime::registry::RegistryConfig;

const FLEET: &str = "[backends.fleet]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n";

#[test]
fn a_bad_backends_table_is_rejected_with_its_field_path() {
    let cases = [
        (
            "[backends.fleet]\nurl = \"redis://h\"",
            "backends.fleet.kind",
        ),
        (
            "[backends.fleet]\nkind = \"etcd\"\nurl = \"redis://h\"",
            "backends.fleet.kind",
        ),
        ("[backends.fleet]\nkind = \"redis\"", "backends.fleet.url"),
        (
            "[backends.fleet]\nkind = \"redis\"\nurl = \"http://h\"",
            "backends.fleet.url",
        ),
        (
            "[backends.fleet]\nkind = \"redis\"\nurl = 5",
            "backends.fleet.url",
        ),
        (
            "[backends.fleet]\nkind = \"redis\"\nurl = \"redis://h\"\nkey_prefix = \"a{b}\"",
            "backends.fleet.key_prefix",
        ),
        (
            "[backends.fleet]\nkind = \"redis\"\nurl = \"redis://h\"\nround_trip_limit = \"soon\"",
            "backends.fleet.round_trip_limit",
        ),
        (
            "[backends.fleet]\nkind = \"redis\"\nurl = \"redis://h\"\nsync_interval = \"0ms\"",
            "backends.fleet.sync_interval",
        ),
        (
            "[backends.fleet]\nkind = \"redis\"\nurl = \"redis://h\"\ntimeout = \"1s\"",
            "backends.fleet.timeout",
        ),
        (
            "[breakers.graph]\nbackend = \"fleet\"",
            "breakers.graph.backend",
        ),
        (
            "[budgets.graph]\nbackend = \"nope\"",
            "budgets.graph.backend",
        ),
        (
            "[rate_limits.graph]\nrate = 1\nbackend = \"nope\"",
            "rate_limits.graph.backend",
        ),
        ("[breakers.graph]\nquorum = 2", "breakers.graph.quorum"),
        (
            "[rate_limits.graph]\nrate = 1\nlease = 2",
            "rate_limits.graph.lease",
        ),
    ];
    for (text, field) in cases {
        let err = RegistryConfig::from_toml_str(text).unwrap_err();
        assert_eq!(err.field(), field, "{text}: {err}");
    }
    let with_fleet = [
        (
            "[breakers.graph]\nbackend = \"fleet\"\nquorum = 0",
            "breakers.graph.quorum",
        ),
        (
            "[rate_limits.graph]\nrate = 1\nbackend = \"fleet\"\nlease = 0",
            "rate_limits.graph.lease",
        ),
        (
            "[budgets.graph]\nbackend = \"flet\"",
            "budgets.graph.backend",
        ),
    ];
    for (text, field) in with_fleet {
        let err = RegistryConfig::from_toml_str(&format!("{FLEET}{text}")).unwrap_err();
        assert_eq!(err.field(), field, "{text}: {err}");
    }
    let err = RegistryConfig::from_toml_str(&format!("{FLEET}[budgets.graph]\nbackend = \"flet\""))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`budgets.graph.backend`: `flet` names no backend; the backends are: fleet"
    );
}

#[test]
fn a_configuration_puts_instances_on_their_backend_and_keeps_an_unchanged_one() {
    let text = format!(
        "{FLEET}round_trip_limit = \"20ms\"\nsync_interval = \"1s\"\n[breakers.graph]\nbackend = \"fleet\"\nquorum = 2\n[rate_limits.graph]\nrate = 5\nper_key = true\nbackend = \"fleet\"\nlease = 4\n[budgets.graph]\nbackend = \"fleet\"\n"
    );
    let registry = Registry::new();
    // Made before the file is applied: attached by it (no runtime here: nothing connects).
    let graph = registry.breaker("graph");
    registry.apply(&RegistryConfig::from_toml_str(&text).unwrap());
    let fleet = registry.redis_backend("fleet").unwrap();
    assert_eq!(fleet.config().round_trip_limit(), Duration::from_millis(20));
    assert_eq!(fleet.config().key_prefix(), "resilience:");
    assert!(format!("{graph:?}").contains("graph"));
    let health = registry.health();
    assert_eq!(health.backends.len(), 1);
    assert_eq!(health.backends[0].kind, "redis");
    // Applying the same backend again keeps it (and its connection).
    registry.apply(&RegistryConfig::from_toml_str(&text).unwrap());
    assert!(registry.redis_backend("fleet").unwrap().ptr_eq(&fleet));
    // A per-key limit on a backend needs no `governor`.
    assert!(RegistryConfig::from_toml_str(&text).is_ok());
}
