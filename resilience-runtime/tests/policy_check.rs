//! A hand-built policy is checked by the rules `#[resilient]` applies at compile time, once, at
//! its site's first call: a violation is logged at ERROR with the field, and the call runs as
//! written.

mod common;
use common::Capture;

use std::time::Duration;

use resilience_runtime::engine::{Hooks, Policy, Site, execute};
use resilience_runtime::{Classify, ErrorClass};

#[derive(Debug)]
struct E;

impl Classify for E {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// Retries a create that nobody marked safe to repeat: `#[resilient]` refuses this.
static UNSAFE_RETRIES: Site = Site::new(&Policy::new("create", module_path!()).with_retries(2));

/// A valid policy: nothing logged.
static VALID: Site = Site::new(
    &Policy::new("list", module_path!())
        .with_retries(2)
        .idempotent(),
);

#[tokio::test(flavor = "current_thread")]
async fn a_hand_built_policy_that_breaks_a_rule_is_reported_once_at_its_first_call() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::ERROR)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    for _ in 0..3 {
        let r = execute(&UNSAFE_RETRIES, Hooks::new(), || async { Ok::<u32, E>(1) }).await;
        assert_eq!(r.unwrap(), 1, "the call runs as written");
        let r = execute(&VALID, Hooks::new(), || async { Ok::<u32, E>(2) }).await;
        assert_eq!(r.unwrap(), 2);
    }
    let out = capture.text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains("ERROR"), "{out}");
    assert!(lines[0].contains("operation=\"create\""), "{out}");
    assert!(lines[0].contains("field=\"retries\""), "{out}");
    assert!(lines[0].contains("`idempotent`"), "{out}");
}

#[test]
fn validate_names_the_field_of_each_rule() {
    let s = Duration::from_secs(1);
    let field = |p: Policy| p.validate().unwrap_err().field().to_owned();
    let p = || Policy::new("op", module_path!());
    assert_eq!(field(p().with_retries(21).idempotent()), "retries");
    assert_eq!(field(p().with_retries(1)), "retries");
    assert_eq!(field(p().with_timeout(Duration::ZERO)), "timeout");
    assert_eq!(field(p().with_deadline(s * 86_400 * 365)), "deadline");
    assert_eq!(
        field(p().with_timeout(20 * s).with_deadline(10 * s)),
        "timeout"
    );
    assert_eq!(
        field(p().with_retries(3).idempotent().with_deadline(2 * s)),
        "deadline"
    );
    assert!(p().with_retries(3).idempotent().validate().is_ok());
}
