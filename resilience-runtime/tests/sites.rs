//! Every annotated site listed at run time, and the startup check against real TOML files
//! (features `sites` and `config`).
#![cfg(all(feature = "sites", feature = "config"))]
// A user crate that forbids unsafe code can still register sites.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use resilience_runtime::engine::{Hooks, Policy, Site, execute};
use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::{Classify, ErrorClass, Registry, sites};

// What `#[resilient(...)]` emits for each fn (see `__private::register_site!`): the site's
// `static` and its registration, in a block inside the fn body. None of these fns is called.

#[allow(dead_code)]
fn list_devices() -> &'static Site {
    const __RESILIENT_POLICY: Policy = Policy::new("list_devices", module_path!())
        .with_retries(5)
        .idempotent()
        .with_breaker("graph");
    static __RESILIENT_SITE: Site = Site::new(&__RESILIENT_POLICY);
    resilience_runtime::__private::register_site!(__RESILIENT_SITE);
    &__RESILIENT_SITE
}

#[allow(dead_code)]
fn assign_license() -> &'static Site {
    const __RESILIENT_POLICY: Policy =
        Policy::new("assign_license", module_path!()).with_breaker("licensing");
    static __RESILIENT_SITE: Site = Site::new(&__RESILIENT_POLICY);
    resilience_runtime::__private::register_site!(__RESILIENT_SITE);
    &__RESILIENT_SITE
}

#[allow(dead_code)]
fn generic_fetch<T: Default>() -> T {
    let _site: &'static Site = {
        const __RESILIENT_POLICY: Policy = Policy::new("generic_fetch", module_path!())
            .with_breaker("okta")
            .with_keyed_breaker();
        static __RESILIENT_SITE: Site = Site::new(&__RESILIENT_POLICY);
        resilience_runtime::__private::register_site!(__RESILIENT_SITE);
        &__RESILIENT_SITE
    };
    T::default()
}

#[allow(dead_code)]
fn no_breaker() -> &'static Site {
    static __RESILIENT_SITE: Site = Site::new(&Policy::new("ping", "health"));
    resilience_runtime::__private::register_site!(__RESILIENT_SITE);
    &__RESILIENT_SITE
}

fn file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resilience-sites-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn every_registered_site_is_listed_without_being_called() {
    let ops: Vec<&str> = sites::all().map(|s| s.policy().operation).collect();
    for op in ["list_devices", "assign_license", "generic_fetch", "ping"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    let report = sites::report(&Registry::new());
    let list = report
        .sites
        .iter()
        .find(|s| s.operation == "list_devices")
        .unwrap();
    assert_eq!(list.breaker, Some("graph"));
    assert_eq!(list.retries, 5);
    assert!(list.idempotent && !list.called);
    assert!(
        report
            .sites
            .iter()
            .find(|s| s.operation == "generic_fetch")
            .unwrap()
            .keyed_breaker
    );
}

#[test]
fn the_startup_check_names_sites_whose_breaker_the_file_does_not_configure() {
    let path = file(
        "resilience.toml",
        "[breakers.graph]\nfailure_threshold = 5\ncooldown = \"60s\"\n\n[breakers.okta]\nwindow = 20\nfailure_ratio = 0.5\n",
    );
    let config = RegistryConfig::from_toml_file(&path).unwrap();
    let report = sites::report(&Registry::new());
    let err = report.check(&config).unwrap_err();
    assert_eq!(
        err.unconfigured_breakers,
        [("sites::assign_license".to_owned(), "licensing")]
    );
    assert_eq!(
        err.to_string(),
        "1 site(s) name breakers the configuration does not define: `sites::assign_license` names `licensing`; add a `[breakers.<name>]` table for each"
    );

    let fixed = file(
        "fixed.toml",
        "[breakers.graph]\n[breakers.okta]\n[breakers.licensing]\nfailure_threshold = 2\n",
    );
    report
        .check(&RegistryConfig::from_toml_file(&fixed).unwrap())
        .unwrap();
}

#[test]
fn a_breaker_table_of_a_near_name_that_no_site_uses_is_suggested() {
    let config = RegistryConfig::from_toml_str(
        "[breakers.graph]\n[breakers.okta]\n[breakers.licencing]\nfailure_threshold = 2\n",
    )
    .unwrap();
    let err = sites::report(&Registry::new()).check(&config).unwrap_err();
    assert_eq!(
        err.breaker_suggestions,
        [("licensing", "licencing".to_owned())]
    );
    assert!(
        err.to_string().contains(
            "`sites::assign_license` names `licensing` (`[breakers.licencing]` names no site's breaker: did you mean `[breakers.licensing]`?)"
        ),
        "{err}"
    );
    // A table far from every unconfigured name is not offered.
    let config =
        RegistryConfig::from_toml_str("[breakers.graph]\n[breakers.okta]\n[breakers.billing]\n")
            .unwrap();
    let err = sites::report(&Registry::new()).check(&config).unwrap_err();
    assert!(err.breaker_suggestions.is_empty(), "{err}");
}

#[test]
fn broken_files_are_rejected_naming_the_file_the_instance_and_the_field() {
    let cases = [
        (
            "typo.toml",
            "[breakers.graph]\ncoldown = \"1s\"\n",
            "breakers.graph.coldown",
        ),
        (
            "bad-duration.toml",
            "[breakers.graph]\ncooldown = \"soon\"\n",
            "breakers.graph.cooldown",
        ),
        (
            "zero.toml",
            "[rate_limits.slack]\nrate = 0\n",
            "rate_limits.slack.rate",
        ),
        (
            "wrong-type.toml",
            "[bulkheads.graph]\nmax_concurrent = \"eight\"\n",
            "bulkheads.graph.max_concurrent",
        ),
    ];
    for (name, text, field) in cases {
        let path = file(name, text);
        let err = RegistryConfig::from_toml_file(&path).unwrap_err();
        assert_eq!(err.field(), field, "{name}: {err}");
        assert_eq!(err.file(), Some(path.display().to_string().as_str()));
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
    }
    let syntax = file("syntax.toml", "[breakers.graph\n");
    let err = RegistryConfig::from_toml_file(&syntax).unwrap_err();
    assert!(err.to_string().contains("syntax.toml"), "{err}");
    let missing = std::env::temp_dir().join("resilience-no-such-file.toml");
    let err = RegistryConfig::from_toml_file(&missing).unwrap_err();
    assert!(
        err.to_string().contains("resilience-no-such-file.toml"),
        "{err}"
    );
}

#[derive(Debug)]
struct Down;
impl Classify for Down {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

static BY_HAND: Site = Site::new(&Policy::new("by_hand", "manual").with_breaker("manual-breaker"));

#[tokio::test]
async fn sites_made_by_hand_are_listed_once_called() {
    let registry = Registry::new();
    assert!(
        !sites::report(&registry)
            .sites
            .iter()
            .any(|s| s.operation == "by_hand")
    );
    let _: Result<(), Down> = registry
        .scope(execute(&BY_HAND, Hooks::new(), || async { Err(Down) }))
        .await;
    let report = sites::report(&registry);
    let s = report
        .sites
        .iter()
        .find(|s| s.operation == "by_hand")
        .unwrap();
    assert!(s.called);
    assert_eq!(s.breaker, Some("manual-breaker"));
    assert!(
        report
            .check(&RegistryConfig::default())
            .unwrap_err()
            .unconfigured_breakers
            .iter()
            .any(|(_, b)| *b == "manual-breaker")
    );
}
