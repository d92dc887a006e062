//! `retry_if_ok`: an `Ok` the caller cannot use yet is retried under the same retries, budget
//! and deadline; when they run out, the last `Ok` is the call's result.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience_runtime::budget::BudgetConfig;
use resilience_runtime::{ConnectorError, Registry, Rejected, RetryOk, resilient};
use tokio::time::Instant;

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(rejected)]
    Rejected(Rejected),
}

/// An HTTP-like answer: `202 Accepted` while the report is computed, with a `Retry-After`.
#[derive(Debug, Clone, PartialEq)]
struct Response {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

fn still_computing(r: &Response) -> RetryOk {
    match (r.status, r.retry_after) {
        (202, Some(after)) => RetryOk::RetryAfter(after),
        (202, None) => RetryOk::Retry,
        _ => RetryOk::Accept,
    }
}

fn metrics(registry: &Registry, operation: &str) -> resilience_runtime::metrics::SiteMetrics {
    registry
        .metrics()
        .site(operation)
        .map(|s| s.metrics.clone())
        .unwrap_or_default()
}

/// A report server: `202` with a hint until `ready_after` polls, then `200`.
struct Reports {
    polls: AtomicU32,
    ready_after: u32,
    hint: Option<Duration>,
}

impl Reports {
    fn answer(&self) -> Response {
        let n = self.polls.fetch_add(1, Ordering::SeqCst) + 1;
        if n >= self.ready_after {
            Response {
                status: 200,
                retry_after: None,
                body: format!("report after {n} polls"),
            }
        } else {
            Response {
                status: 202,
                retry_after: self.hint,
                body: String::new(),
            }
        }
    }

    #[resilient(
        retries = 3,
        idempotent,
        jitter = "none",
        backoff(base = "100ms"),
        retry_if_ok = still_computing
    )]
    async fn report(&self) -> Result<Response, ApiError> {
        tokio::task::yield_now().await;
        Ok(self.answer())
    }

    #[resilient(
        retries = 3,
        idempotent,
        jitter = "none",
        backoff(base = "100ms"),
        budget = "reports-budget",
        retry_if_ok = still_computing
    )]
    async fn report_on_budget(&self) -> Result<Response, ApiError> {
        Ok(self.answer())
    }

    #[resilient(
        retries = 2,
        idempotent,
        jitter = "none",
        backoff(base = "1s"),
        deadline = "10s",
        retry_if_ok = still_computing
    )]
    async fn report_by(&self) -> Result<Response, ApiError> {
        Ok(self.answer())
    }
}

#[tokio::test(start_paused = true)]
async fn a_202_is_polled_again_after_its_retry_after_until_the_200() {
    let registry = Registry::new();
    let reports = Reports {
        polls: AtomicU32::new(0),
        ready_after: 2,
        hint: Some(Duration::from_secs(5)),
    };
    let start = Instant::now();
    let r = registry.scope(reports.report()).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "report after 2 polls");
    // The hint, not the 100 ms backoff.
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let m = metrics(&registry, "report");
    assert_eq!((m.ok, m.retries, m.retry_successes), (1, 1, 1));
    assert_eq!(m.errors.total(), 0);
}

#[tokio::test(start_paused = true)]
async fn when_the_retries_run_out_the_last_ok_is_the_result() {
    let registry = Registry::new();
    let reports = Reports {
        polls: AtomicU32::new(0),
        ready_after: u32::MAX,
        hint: None,
    };
    let start = Instant::now();
    let r = registry.scope(reports.report()).await.unwrap();
    assert_eq!(r.status, 202, "the last Ok, not an error");
    assert_eq!(reports.polls.load(Ordering::SeqCst), 4);
    // The backoff schedule: 100 ms, 200 ms, 400 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(700));
    let m = metrics(&registry, "report");
    assert_eq!((m.ok, m.retries), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_the_deadline_returns_the_last_ok_at_once() {
    let registry = Registry::new();
    let reports = Reports {
        polls: AtomicU32::new(0),
        ready_after: 3,
        hint: Some(Duration::from_secs(6)),
    };
    let start = Instant::now();
    let r = registry.scope(reports.report_by()).await.unwrap();
    // 6 s, then another 6 s would pass the 10 s deadline: the second 202 is the result.
    assert_eq!(r.status, 202);
    assert_eq!(reports.polls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn when_the_budget_runs_out_the_last_ok_is_the_result() {
    // One retry's worth of tokens.
    let registry = Registry::new();
    registry
        .configure_budget(
            "reports-budget",
            BudgetConfig::new()
                .with_capacity(5)
                .with_retry_cost(5)
                .with_refund_milli(0),
        )
        .unwrap();
    let reports = Reports {
        polls: AtomicU32::new(0),
        ready_after: u32::MAX,
        hint: None,
    };
    let r = registry.scope(reports.report_on_budget()).await.unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(reports.polls.load(Ordering::SeqCst), 2);
    let m = metrics(&registry, "report_on_budget");
    assert_eq!((m.ok, m.retries, m.budget_exhausted), (1, 1, 1));
}

static JOB_POLLS: AtomicU32 = AtomicU32::new(0);

fn unfinished(state: &&'static str) -> RetryOk {
    if *state == "running" {
        RetryOk::Retry
    } else {
        RetryOk::Accept
    }
}

#[resilient(
    retries = 4,
    idempotent,
    jitter = "none",
    backoff(base = "10ms"),
    retry_if_ok = unfinished
)]
fn job_state() -> Result<&'static str, ApiError> {
    if JOB_POLLS.fetch_add(1, Ordering::SeqCst) < 2 {
        Ok("running")
    } else {
        Ok("done")
    }
}

#[test]
fn a_blocking_site_polls_with_the_blocking_sleep() {
    let slept = Arc::new(Mutex::new(Vec::new()));
    let log = slept.clone();
    let registry = Registry::new().with_blocking_sleep(move |d| log.lock().unwrap().push(d));
    assert_eq!(registry.enter(job_state).unwrap(), "done");
    assert_eq!(JOB_POLLS.load(Ordering::SeqCst), 3);
    assert_eq!(
        *slept.lock().unwrap(),
        [Duration::from_millis(10), Duration::from_millis(20)]
    );
}

static GLOBAL_POLLS: AtomicU32 = AtomicU32::new(0);

fn not_ready(n: &u32) -> RetryOk {
    if *n < 2 {
        RetryOk::Retry
    } else {
        RetryOk::Accept
    }
}

/// At the global registry, untraced: the first attempt's `Ok` is judged on the fast path.
#[resilient(retries = 3, idempotent, backoff(base = "1ms"), retry_if_ok = not_ready)]
async fn polled_fast() -> Result<u32, ApiError> {
    Ok(GLOBAL_POLLS.fetch_add(1, Ordering::SeqCst))
}

static BLOCKING_POLLS: AtomicU32 = AtomicU32::new(0);

#[resilient(retries = 3, idempotent, backoff(base = "1ms"), retry_if_ok = not_ready)]
fn polled_fast_blocking() -> Result<u32, ApiError> {
    Ok(BLOCKING_POLLS.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn the_fast_path_judges_the_first_ok_too() {
    assert_eq!(polled_fast().await.unwrap(), 2);
    assert_eq!(GLOBAL_POLLS.load(Ordering::SeqCst), 3);
    // The blocking fast path: its two backoffs of 1 ms and 2 ms are slept on the thread.
    assert_eq!(polled_fast_blocking().unwrap(), 2);
    assert_eq!(BLOCKING_POLLS.load(Ordering::SeqCst), 3);
}
