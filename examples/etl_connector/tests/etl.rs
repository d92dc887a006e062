//! The blocking ETL connector against the fake source: retries on the blocking engine, items
//! skipped with their reason, the run in error only on the unexpected. Waits are recorded, not
//! slept.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etl_connector::{
    Answer, Connector, Entity, FakeSource, RawIoc, RunError, Sink, SourceClient, demo_source,
};
use resilience_runtime::Registry;
use resilience_runtime::breaker::BreakerConfig;

/// A registry of its own whose blocking sleeps are recorded instead of slept.
fn registry(threshold: u32) -> (Registry, Arc<Mutex<Vec<Duration>>>) {
    let waits = Arc::new(Mutex::new(Vec::new()));
    let w = waits.clone();
    let r = Registry::new().with_blocking_sleep(move |d| w.lock().unwrap().push(d));
    r.configure_breaker(
        "octi-source",
        BreakerConfig::new().with_failure_threshold(threshold),
    )
    .unwrap();
    (r, waits)
}

fn iocs(n: usize) -> Vec<RawIoc> {
    (1..=n)
        .map(|i| RawIoc {
            id: format!("ioc-{i:02}"),
            kind: "domain".into(),
            value: format!("d{i}.example"),
        })
        .collect()
}

#[test]
fn the_demo_run_retries_transients_and_skips_with_reasons() {
    let (registry, waits) = registry(10);
    let source = Arc::new(demo_source());
    let (report, sent) = registry.enter(|| {
        let mut c = Connector::new(SourceClient::new(source.clone()), Vec::new());
        let report = c.work();
        (report, c.sink().clone())
    });
    assert!(!report.in_error(), "{report:?}");
    assert_eq!(report.listed, 12);
    assert_eq!(report.processed, 7);
    assert_eq!(sent.len(), 7);
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|s| (s.id.as_str(), s.stage, s.class.as_deref()))
        .collect();
    assert_eq!(
        skipped,
        [
            ("ioc-05", "conversion", None),
            ("ioc-06", "retrieval", Some("transient")),
            ("ioc-08", "conversion", None),
            ("ioc-10", "conversion", None),
            ("ioc-11", "retrieval", Some("permanent")),
        ]
    );
    // The retrieval error keeps the source's error as its source (`raise ... from ...`).
    assert!(
        report.skipped[1]
            .reason
            .ends_with("data source answered 503")
    );
    // Transients are retried, the permanent one is not.
    assert_eq!(source.calls(FakeSource::IDS), 2);
    assert_eq!(source.calls("ioc-02"), 3);
    assert_eq!(source.calls("ioc-03"), 2);
    assert_eq!(source.calls("ioc-06"), 4, "1 + 3 retries, then skipped");
    assert_eq!(source.calls("ioc-11"), 1);
    assert_eq!(report.retries, 7);
    let waits = waits.lock().unwrap();
    assert_eq!(waits.len(), 7, "one blocking wait per retry");
    assert!(
        waits.iter().all(|w| *w >= Duration::from_millis(200)),
        "{waits:?}"
    );
}

#[test]
fn an_unreachable_source_is_a_warning_not_an_error() {
    let (registry, _) = registry(10);
    let source = Arc::new(FakeSource::new(iocs(3)).fail(FakeSource::IDS, [Answer::Status(503); 4]));
    let report =
        registry.enter(|| Connector::new(SourceClient::new(source.clone()), Vec::new()).work());
    assert!(!report.in_error());
    assert_eq!(report.processed, 0);
    let why = report.source_unreachable.unwrap();
    assert!(why.contains("the id list") && why.ends_with("503"), "{why}");
    assert_eq!(source.calls(FakeSource::IDS), 4);
}

#[derive(Debug, Default)]
struct RefusingSink(usize);

impl Sink for RefusingSink {
    fn send(&mut self, id: &str, _: Entity) -> Result<(), RunError> {
        self.0 += 1;
        if id == "ioc-02" {
            return Err(RunError::Send("platform answered 500".into()));
        }
        Ok(())
    }
}

#[test]
fn a_send_failure_ends_the_run_in_error() {
    let (registry, _) = registry(10);
    let source = Arc::new(FakeSource::new(iocs(4)));
    let report = registry.enter(|| {
        Connector::new(SourceClient::new(source.clone()), RefusingSink::default()).work()
    });
    assert!(report.in_error());
    assert_eq!(report.processed, 1);
    assert_eq!(
        report.error.as_deref(),
        Some("sending to the platform failed: platform answered 500")
    );
    assert_eq!(source.calls("ioc-03"), 0, "the run stopped");
}

#[derive(Debug)]
struct PanickingSink;

impl Sink for PanickingSink {
    fn send(&mut self, _: &str, _: Entity) -> Result<(), RunError> {
        panic!("index out of bounds");
    }
}

#[test]
fn a_panic_ends_the_run_in_error() {
    let (registry, _) = registry(10);
    let source = Arc::new(FakeSource::new(iocs(2)));
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let report =
        registry.enter(|| Connector::new(SourceClient::new(source.clone()), PanickingSink).work());
    std::panic::set_hook(prev);
    assert!(report.in_error());
    assert_eq!(
        report.error.as_deref(),
        Some("unexpected panic: index out of bounds")
    );
}

#[test]
fn an_open_breaker_stops_calling_the_source() {
    let (registry, _) = registry(3);
    let mut source = FakeSource::new(iocs(6));
    for id in ["ioc-01", "ioc-02"] {
        source = source.fail(id, [Answer::Status(503); 4]);
    }
    let source = Arc::new(source);
    let report =
        registry.enter(|| Connector::new(SourceClient::new(source.clone()), Vec::new()).work());
    assert!(!report.in_error());
    assert_eq!(report.processed, 0, "{report:#?}");
    // Three failures open the breaker during ioc-01's retries: ioc-01 ends rejected, and so does
    // every later item, without a call to the source.
    assert_eq!(source.calls("ioc-01"), 3);
    for id in ["ioc-02", "ioc-03", "ioc-06"] {
        assert_eq!(source.calls(id), 0, "{id}");
    }
    assert!(
        report
            .skipped
            .iter()
            .all(|s| s.class.as_deref() == Some("transient"))
    );
    assert!(
        report.skipped[1]
            .reason
            .contains("circuit `octi-source` is open"),
        "{}",
        report.skipped[1].reason
    );
}
