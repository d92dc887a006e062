//! Every annotated site is listed at run time, before its first call, so a startup check can
//! report a site that names an unconfigured breaker. The fns here are never called on purpose.
#![allow(dead_code)]

use resilience_runtime::registry::RegistryConfig;
use resilience_runtime::{ConnectorError, Registry, Rejected, resilient, sites};

#[derive(Debug, ConnectorError)]
enum E {
    #[connector(transient)]
    Busy,
    #[connector(rejected)]
    Rejected(Rejected),
}

#[resilient(retries = 2, idempotent, breaker = "sites_graph")]
async fn never_called_graph() -> Result<(), E> {
    Err(E::Busy)
}

#[resilient(breaker = "sites_okta")]
fn never_called_okta() -> Result<(), E> {
    Ok(())
}

struct Client;

impl Client {
    #[resilient]
    async fn generic_site<T: Send>(&self, t: T) -> Result<T, E> {
        Ok(t)
    }
}

#[test]
fn sites_are_listed_before_their_first_call() {
    let ops: Vec<&str> = sites::all().map(|s| s.policy().operation).collect();
    for op in ["never_called_graph", "never_called_okta", "generic_site"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    // Each is listed with its `connector` label: this crate's name, breaker or not.
    let report = sites::report(&Registry::new());
    for op in ["never_called_graph", "never_called_okta", "generic_site"] {
        let site = report.sites.iter().find(|s| s.operation == op).unwrap();
        assert_eq!(site.connector, "sites", "{op}");
    }
}

#[test]
fn the_startup_check_names_the_unconfigured_breaker() {
    let config =
        RegistryConfig::from_toml_str("[breakers.sites_graph]\nfailure_threshold = 3\n").unwrap();
    let report = sites::report(&Registry::new());
    let err = report.check(&config).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("sites_okta"), "{text}");
    assert!(text.contains("never_called_okta"), "{text}");
    assert!(!text.contains("never_called_graph"), "{text}");
}
