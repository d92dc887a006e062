//! Site policies at run time: a configuration's `[sites."<name>"]` tables and per-call overrides
//! over the attribute, on live sites, and the startup check that knows the sites.
//!
//! Each test has sites of its own; most run them in a registry of their own. Time is tokio's
//! paused clock: waits and timeouts are exact.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::breaker::BreakerState;
use resilience_runtime::registry::{
    PolicyOverride, PolicySource, PolicySources, RegistryConfig, SitePolicy,
};
use resilience_runtime::{
    CallContext, ConnectorError, Registry, Rejected, resilient, sites, with_policy,
};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error, ConnectorError)]
enum ApiError {
    #[error("busy")]
    #[connector(transient)]
    Busy,
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn config(toml: &str) -> RegistryConfig {
    RegistryConfig::from_toml_str(toml).unwrap()
}

fn runs(counter: &AtomicU32) -> u32 {
    counter.load(Ordering::SeqCst)
}

static LIVE_RUNS: AtomicU32 = AtomicU32::new(0);
static LIVE_SLOW: AtomicBool = AtomicBool::new(false);

#[resilient(
    retries = 1,
    idempotent,
    breaker = "sp_live",
    timeout = "10s",
    backoff(base = "100ms", max = "100ms"),
    jitter = "none"
)]
async fn live_list() -> Result<u32, ApiError> {
    LIVE_RUNS.fetch_add(1, Ordering::SeqCst);
    if LIVE_SLOW.load(Ordering::SeqCst) {
        tokio::time::sleep(5 * S).await;
    }
    Err(ApiError::Busy)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_file_change_reaches_a_live_site_on_its_next_call_and_its_breaker_keeps_its_state() {
    let r = Registry::new();
    r.apply(&config("[breakers.sp_live]\nfailure_threshold = 20\n"));
    r.scope(async {
        assert!(matches!(live_list().await, Err(ApiError::Busy)));
        assert_eq!(runs(&LIVE_RUNS), 2);
        let breaker = r.breaker("sp_live");
        assert_eq!(breaker.failures(), 2);

        // The file gives the live site three retries and a 1s timeout: its next call has them.
        r.apply(&config(
            "[sites.\"site_policies::live_list\"]\nretries = 3\ntimeout = \"1s\"\n",
        ));
        assert!(matches!(live_list().await, Err(ApiError::Busy)));
        assert_eq!(runs(&LIVE_RUNS), 6);
        // The same breaker, its count kept across the reload.
        assert!(Arc::ptr_eq(&breaker, &r.breaker("sp_live")));
        assert_eq!(breaker.failures(), 6);

        // Attempts of 5s now time out after the file's 1s: four of them, three waits of 100ms.
        LIVE_SLOW.store(true, Ordering::SeqCst);
        let start = Instant::now();
        let err = live_list().await.unwrap_err();
        assert!(
            matches!(err, ApiError::Rejected(Rejected::AttemptTimeout { timeout }) if timeout == S),
            "{err:?}"
        );
        assert_eq!(start.elapsed(), 4 * S + 300 * MS);
        assert_eq!(runs(&LIVE_RUNS), 10);
        assert_eq!(breaker.failures(), 10);
        assert_eq!(breaker.state(), BreakerState::Closed);
    })
    .await;
}

static GLOBAL_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    retries = 0,
    idempotent,
    breaker = "sp_global",
    backoff(base = "10ms", max = "10ms"),
    jitter = "none"
)]
async fn global_list() -> Result<u32, ApiError> {
    GLOBAL_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Busy)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_site_of_the_global_registry_follows_its_table_and_an_empty_table_gives_it_back_its_attribute()
 {
    let global = Registry::global();
    global.apply(&config("[breakers.sp_global]\nfailure_threshold = 20\n"));
    // On the fast path: its attribute's one attempt.
    assert!(global_list().await.is_err());
    assert_eq!(runs(&GLOBAL_RUNS), 1);
    global.apply(&config(
        "[sites.\"site_policies::global_list\"]\nretries = 2\n",
    ));
    assert!(global_list().await.is_err());
    assert_eq!(runs(&GLOBAL_RUNS), 4);
    global.apply(&config("[sites.\"site_policies::global_list\"]\n"));
    assert!(global_list().await.is_err());
    assert_eq!(runs(&GLOBAL_RUNS), 5);
}

static FRESH_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    retries = 0,
    idempotent,
    breaker = "sp_fresh",
    backoff(base = "10ms", max = "10ms"),
    jitter = "none"
)]
async fn fresh_list() -> Result<u32, ApiError> {
    FRESH_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Busy)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_table_applied_before_a_sites_first_call_holds_from_that_call() {
    Registry::global().apply(&config(
        "[breakers.sp_fresh]\nfailure_threshold = 20\n\n[sites.\"site_policies::fresh_list\"]\nretries = 1\n",
    ));
    assert!(fresh_list().await.is_err());
    assert_eq!(runs(&FRESH_RUNS), 2);
}

static TENANT_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    retries = 2,
    idempotent,
    breaker = "sp_tenant",
    backoff(base = "100ms", max = "100ms"),
    jitter = "none"
)]
async fn tenant_list(tenant: &str) -> Result<String, ApiError> {
    TENANT_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(30 * S).await;
    Ok(tenant.to_owned())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_tenants_override_holds_for_its_calls_alone() {
    let r = Registry::new();
    r.apply(&config("[breakers.sp_tenant]\nfailure_threshold = 20\n"));
    // The attribute has no timeout: a slow call succeeds.
    let start = Instant::now();
    assert_eq!(r.scope(tenant_list("contoso")).await.unwrap(), "contoso");
    assert_eq!((start.elapsed(), runs(&TENANT_RUNS)), (30 * S, 1));

    // This tenant gets a 2s timeout and one retry.
    let acme = PolicyOverride::new().with_retries(1).with_timeout(2 * S);
    let start = Instant::now();
    let call = with_policy(acme.clone(), tenant_list("acme")).unwrap();
    let err = r.scope(call).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Rejected(Rejected::AttemptTimeout { timeout }) if timeout == 2 * S),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), 2 * S + 100 * MS + 2 * S);
    assert_eq!(runs(&TENANT_RUNS), 3);

    // The scope's order does not matter, and another tenant's call is the attribute's again.
    let start = Instant::now();
    let inside = r.scope(tenant_list("acme"));
    assert!(with_policy(acme, inside).unwrap().await.is_err());
    assert_eq!(start.elapsed(), 4 * S + 100 * MS);
    let start = Instant::now();
    assert_eq!(r.scope(tenant_list("fabrikam")).await.unwrap(), "fabrikam");
    assert_eq!((start.elapsed(), runs(&TENANT_RUNS)), (30 * S, 6));
}

#[resilient(retries = 1, idempotent, breaker = "sp_precedence", timeout = "10s")]
async fn precedence() -> Result<(SitePolicy, u32), ApiError> {
    let ctx = CallContext::current().expect("inside the call");
    Ok((ctx.policy(), ctx.max_attempts()))
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_calls_values_win_over_the_files_which_win_over_the_attributes() {
    let attribute_only = Registry::new();
    let (p, attempts) = attribute_only.scope(precedence()).await.unwrap();
    assert_eq!((p.retries, attempts), (1, 2));
    assert_eq!(p.sources, sources(PolicySource::Attribute, [None; 5]));

    let r = Registry::new();
    r.apply(&config(
        "[sites.\"site_policies::precedence\"]\nretries = 2\nbackoff = { base = \"50ms\" }\n",
    ));
    let (p, attempts) = r.scope(precedence()).await.unwrap();
    assert_eq!((p.retries, attempts, p.backoff.base), (2, 3, 50 * MS));
    assert_eq!((p.timeout, p.deadline), (Some(10 * S), None));
    let file = Some(PolicySource::File);
    assert_eq!(
        p.sources,
        sources(PolicySource::Attribute, [file, file, None, None, None])
    );

    let call = PolicyOverride::new().with_retries(3).with_deadline(60 * S);
    let (p, attempts) = r
        .scope(with_policy(call, precedence()).unwrap())
        .await
        .unwrap();
    assert_eq!((p.retries, attempts, p.backoff.base), (3, 4, 50 * MS));
    assert_eq!((p.timeout, p.deadline), (Some(10 * S), Some(60 * S)));
    assert_eq!(p.budget, "sp_precedence");
    let call = Some(PolicySource::Call);
    assert_eq!(
        p.sources,
        sources(PolicySource::Attribute, [call, file, None, call, None])
    );
}

/// Sources: `base` for every value, but where `over` says (retries, backoff, timeout, deadline,
/// budget).
fn sources(base: PolicySource, over: [Option<PolicySource>; 5]) -> PolicySources {
    let [retries, backoff, timeout, deadline, budget] = over.map(|o| o.unwrap_or(base));
    let mut s = PolicySources::ATTRIBUTE;
    s.retries = retries;
    s.backoff = backoff;
    s.timeout = timeout;
    s.deadline = deadline;
    s.budget = budget;
    s
}

static CREATE_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(breaker = "sp_create")]
async fn create_user() -> Result<u32, ApiError> {
    CREATE_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Busy)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_file_cannot_make_a_site_that_is_not_safe_to_repeat_retry() {
    let cfg = config("[sites.\"site_policies::create_user\"]\nretries = 2\n");
    let err = sites::report(&Registry::new()).check(&cfg).unwrap_err();
    let refused = err
        .tables
        .iter()
        .find(|e| e.field() == "sites.\"site_policies::create_user\".retries")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        refused.reason(),
        "`retries = 2` runs the operation again after a failure, so it must be safe to repeat; a configuration cannot make an operation safe to repeat: mark the site `idempotent` (or give it an `idempotency_key`) in code, or remove `retries`"
    );

    // Applied regardless, the table is refused at the site, which makes its one attempt.
    let r = Registry::new();
    r.apply(&cfg);
    assert!(r.scope(create_user()).await.is_err());
    assert_eq!(runs(&CREATE_RUNS), 1);
    let s = sites::report(&r)
        .sites
        .into_iter()
        .find(|s| s.operation == "create_user")
        .unwrap();
    assert_eq!((s.retries, s.sources.retries), (0, PolicySource::Attribute));

    // A per-call override's retries skip it too (its other values still apply).
    let retry = PolicyOverride::new().with_retries(3);
    assert!(
        r.scope(with_policy(retry, create_user()).unwrap())
            .await
            .is_err()
    );
    assert_eq!(runs(&CREATE_RUNS), 2);
}

#[tokio::test]
async fn a_table_that_names_no_site_is_reported_by_the_startup_check_with_the_table() {
    let cfg = config(
        "[sites.\"nope\"]\nretries = 1\n\n[sites.\"site_policies::live_lst\"]\nretries = 1\n",
    );
    let err = sites::report(&Registry::new()).check(&cfg).unwrap_err();
    let nope = err
        .tables
        .iter()
        .find(|e| e.field() == "sites.\"nope\"")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        nope.reason(),
        "names no site of this program; a site is named `<module path>::<fn>`, or by its `#[resilient(name = \"...\")]` (`sites::report` lists them)"
    );
    let typo = err
        .tables
        .iter()
        .find(|e| e.field() == "sites.\"site_policies::live_lst\"")
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        typo.reason()
            .ends_with("; did you mean `site_policies::live_list`?"),
        "{typo}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`sites.\"nope\"`: names no site of this program"),
        "{text}"
    );
}

mod dup {
    use super::ApiError;
    use resilience_runtime::resilient;

    pub(crate) struct Users;
    pub(crate) struct Groups;
    pub(crate) struct Devices;

    impl Users {
        #[resilient]
        pub(crate) async fn list(&self) -> Result<u32, ApiError> {
            Ok(1)
        }
    }

    impl Groups {
        #[resilient]
        pub(crate) async fn list(&self) -> Result<u32, ApiError> {
            Ok(2)
        }
    }

    impl Devices {
        // The fix: a name of its own.
        #[resilient(name = "site_policies::dup::devices::list")]
        pub(crate) async fn list(&self) -> Result<u32, ApiError> {
            Ok(3)
        }
    }
}

#[tokio::test]
async fn two_sites_with_one_name_fail_the_startup_check() {
    assert_eq!(dup::Users.list().await.unwrap(), 1);
    assert_eq!(dup::Groups.list().await.unwrap(), 2);
    assert_eq!(dup::Devices.list().await.unwrap(), 3);
    let report = sites::report(&Registry::new());
    let err = report.check(&RegistryConfig::default()).unwrap_err();
    assert_eq!(
        err.duplicate_names,
        [(
            "site_policies::dup::list".to_owned(),
            vec![
                "site_policies::dup::list".to_owned(),
                "site_policies::dup::list".to_owned()
            ]
        )]
    );
    assert!(
        err.to_string().contains(
            "2 sites are named `site_policies::dup::list` (fns of one name in one module, methods of two types say), so a `[sites]` table cannot tell them apart; give all but one a `#[resilient(name = \"...\")]` of its own"
        ),
        "{err}"
    );
    let named = report
        .sites
        .iter()
        .find(|s| s.name == "site_policies::dup::devices::list")
        .unwrap();
    assert_eq!(
        (named.module, named.operation),
        ("site_policies::dup", "list")
    );
}

#[resilient(
    retries = 3,
    idempotent,
    budget = "sp_shared",
    backoff(base = "10ms", max = "10ms"),
    jitter = "none"
)]
async fn shared_a() -> Result<u32, ApiError> {
    Err(ApiError::Busy)
}

#[resilient(
    retries = 3,
    idempotent,
    backoff(base = "10ms", max = "10ms"),
    jitter = "none"
)]
async fn shared_b() -> Result<u32, ApiError> {
    Err(ApiError::Busy)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_budget_named_by_the_attribute_and_by_the_file_is_shared_by_both_sites() {
    let cfg = config(
        "[budgets.sp_shared]\ncapacity = 2\nretry_cost = 1\n\n[sites.\"site_policies::shared_b\"]\nbudget = \"sp_shared\"\n",
    );
    let r = Registry::new();
    r.apply(&cfg);
    assert!(r.scope(shared_a()).await.is_err());
    assert!(r.scope(shared_b()).await.is_err());
    let m = |op: &str| r.metrics().site(op).unwrap().metrics.clone();
    // `shared_a` spent both tokens and was refused its third retry; `shared_b` its first.
    assert_eq!(
        (m("shared_a").retries, m("shared_a").budget_exhausted),
        (2, 1)
    );
    assert_eq!(
        (m("shared_b").retries, m("shared_b").budget_exhausted),
        (0, 1)
    );
    assert_eq!(r.budget("sp_shared").exhausted_total(), 2);

    // A reload keeps the budget's state: still empty.
    r.apply(&cfg);
    assert!(r.scope(shared_b()).await.is_err());
    assert_eq!(r.budget("sp_shared").exhausted_total(), 3);

    let health = r.health();
    let site = |name: &str| health.sites.iter().find(|s| s.name == name).unwrap();
    let (a, b) = (
        site("site_policies::shared_a"),
        site("site_policies::shared_b"),
    );
    assert_eq!(
        (a.budget.as_str(), a.sources.budget),
        ("sp_shared", PolicySource::Attribute)
    );
    assert_eq!(
        (b.budget.as_str(), b.sources.budget),
        ("sp_shared", PolicySource::File)
    );
}

#[resilient(retries = 2, idempotent, breaker = "sp_report", timeout = "5s")]
async fn reported() -> Result<u32, ApiError> {
    Ok(1)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_site_report_and_health_show_the_values_in_force_and_their_sources() {
    let r = Registry::new();
    r.apply(&config(
        "[sites.\"site_policies::reported\"]\nretries = 4\ndeadline = \"2m\"\n",
    ));
    let report = sites::report(&r);
    let s = report
        .sites
        .iter()
        .find(|s| s.name == "site_policies::reported")
        .unwrap();
    assert!(!s.called);
    assert_eq!(
        (s.retries, s.timeout, s.deadline, s.budget.as_str()),
        (4, Some(5 * S), Some(120 * S), "sp_report")
    );
    let file = Some(PolicySource::File);
    let expected = sources(PolicySource::Attribute, [file, None, None, file, None]);
    assert_eq!(s.sources, expected);
    let json = serde_json::to_value(s).unwrap();
    assert_eq!(json["sources"]["retries"], "file");
    assert_eq!(json["sources"]["timeout"], "attribute");
    assert_eq!(json["backoff"]["jitter"], "proportional");

    // Called, the site is in health with the same policy.
    assert_eq!(r.scope(reported()).await.unwrap(), 1);
    let health = r.health();
    let h = health
        .sites
        .iter()
        .find(|h| h.name == "site_policies::reported")
        .unwrap();
    assert_eq!(
        (h.retries, h.deadline, h.sources),
        (4, Some(120 * S), expected)
    );
    assert!(
        sites::report(&r)
            .sites
            .iter()
            .any(|s| s.name == h.name && s.called)
    );
}

static BLOCKING_RUNS: AtomicU32 = AtomicU32::new(0);

#[resilient(
    retries = 0,
    idempotent,
    backoff(base = "20ms", max = "20ms"),
    jitter = "none"
)]
fn blocking_read() -> Result<u32, ApiError> {
    BLOCKING_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(ApiError::Busy)
}

#[test]
fn a_blocking_site_takes_its_tables_retries_and_no_timeout() {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let seen = waits.clone();
    let r = Registry::new().with_blocking_sleep(move |d| seen.lock().unwrap().push(d));
    let cfg = config("[sites.\"site_policies::blocking_read\"]\nretries = 2\n");
    r.apply(&cfg);
    assert!(r.enter(blocking_read).is_err());
    assert_eq!(runs(&BLOCKING_RUNS), 3);
    assert_eq!(*waits.lock().unwrap(), [20 * MS, 20 * MS]);

    let timed = config("[sites.\"site_policies::blocking_read\"]\ntimeout = \"1s\"\n");
    let err = sites::report(&r).check(&timed).unwrap_err();
    let refused = err
        .tables
        .iter()
        .find(|e| e.field() == "sites.\"site_policies::blocking_read\".timeout")
        .unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        refused.reason(),
        "`timeout` needs an async fn: a blocking call cannot be interrupted; remove `timeout`: the site is a blocking fn"
    );
}

#[resilient(
    retries = 1,
    idempotent,
    timeout = "1s",
    deadline = "5s",
    jitter = "none"
)]
async fn bounded() -> Result<SitePolicy, ApiError> {
    Ok(CallContext::current().expect("inside the call").policy())
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_override_is_checked_when_built_and_a_site_it_does_not_fit_runs_without_it() {
    let err = with_policy(PolicyOverride::new().with_retries(21), bounded()).unwrap_err();
    assert_eq!(err.field(), "retries");
    let err = with_policy(
        PolicyOverride::new().with_timeout(10 * S).with_deadline(S),
        bounded(),
    )
    .unwrap_err();
    assert_eq!(err.field(), "timeout");

    // A 10s timeout is longer than this site's 5s deadline: the site runs on its attribute's.
    let long = PolicyOverride::new().with_timeout(10 * S);
    let p = with_policy(long, bounded()).unwrap().await.unwrap();
    assert_eq!(
        (p.timeout, p.sources.timeout),
        (Some(S), PolicySource::Attribute)
    );
    // A 2s one fits.
    let short = PolicyOverride::new().with_timeout(2 * S);
    let p = with_policy(short, bounded()).unwrap().await.unwrap();
    assert_eq!(
        (p.timeout, p.sources.timeout),
        (Some(2 * S), PolicySource::Call)
    );
}
