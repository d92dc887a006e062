//! A blocking ETL connector in the shape of seed 004 (an OpenCTI connector): fetch the ids, fetch
//! each item, convert it, send the result; skip an item with a WARN when it cannot be retrieved or
//! converted; report the run as failed on anything unexpected.
//!
//! The client's methods are plain `fn`s: `#[resilient]` runs them on the blocking engine (retries
//! sleep the thread; there is no per-attempt timeout, since a blocking call cannot be
//! interrupted). The data source is [`FakeSource`], an in-process stand-in with injected
//! failures, so the example needs no network.
//!
//! Errors follow the seed: the client turns what the source says into a [`SourceError`]
//! (classified for the engine), and the connector wraps it in a [`DataRetrievalError`] that keeps
//! it as its `source()` (`raise ... from ...`). Conversion problems are [`ConversionError`]s.
//! Both skip the item. Anything else ends the run in error.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

use resilience_runtime::{Classify, ConnectorError, Rejected, resilient};
use serde::Serialize;

/// What the data source says when it fails.
#[derive(Debug, thiserror::Error, ConnectorError)]
pub enum SourceError {
    /// An HTTP status: 429 is throttled (retried, never counted by the breaker), 5xx transient,
    /// other 4xx permanent (the status table).
    #[error("data source answered {status}")]
    #[connector(status = status)]
    Http {
        /// The status.
        status: u16,
    },
    /// The source has no such item.
    #[error("no item `{0}` at the source")]
    #[connector(permanent, code = "404")]
    NotFound(String),
    /// The answer was not what the source documents.
    #[error("malformed answer: {0}")]
    #[connector(permanent, code = "malformed")]
    Malformed(String),
    /// The runtime stopped the call (the breaker is open).
    #[error(transparent)]
    #[connector(rejected)]
    Rejected(#[from] Rejected),
}

/// The data source could not provide what was asked (seed 004's `DataRetrievalError`): not the
/// connector's fault; the item is skipped.
#[derive(Debug, thiserror::Error)]
#[error("the data source could not provide {what}")]
pub struct DataRetrievalError {
    what: String,
    #[source]
    source: SourceError,
}

impl DataRetrievalError {
    /// What the source error means for the next attempt.
    pub fn class(&self) -> resilience_runtime::ErrorClass {
        self.source.class()
    }
}

/// The connector cannot turn an item into entities (seed 004's `UseCaseError`): the item is
/// skipped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConversionError {
    /// The item's type is not one the converter knows.
    #[error("unsupported ioc type `{0}`")]
    UnsupportedType(String),
    /// A required field is empty.
    #[error("ioc `{0}` has an empty value")]
    EmptyValue(String),
}

/// Why one item was skipped.
#[derive(Debug, thiserror::Error)]
pub enum ItemError {
    /// Retrieval failed.
    #[error(transparent)]
    Retrieval(#[from] DataRetrievalError),
    /// Conversion failed.
    #[error(transparent)]
    Conversion(#[from] ConversionError),
}

/// Something the connector did not expect: the run ends in error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The platform refused the entities.
    #[error("sending to the platform failed: {0}")]
    Send(String),
    /// A bug: a panic in the connector.
    #[error("unexpected panic: {0}")]
    Panic(String),
}

/// An indicator as the source serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RawIoc {
    /// The id.
    pub id: String,
    /// `domain`, `ip` or `hash`; anything else cannot be converted.
    pub kind: String,
    /// The value.
    pub value: String,
}

/// What the connector sends to the platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Entity {
    /// A domain name.
    DomainName {
        /// The domain.
        value: String,
    },
    /// An IPv4 or IPv6 address.
    IpAddress {
        /// The address.
        value: String,
    },
    /// A file hash.
    FileHash {
        /// The hash.
        value: String,
    },
}

/// How the fake source answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Answer with this HTTP status (a failure).
    Status(u16),
    /// Answer with a malformed body.
    Malformed,
}

/// An in-process data source with scripted failures.
///
/// Each id (and the id listing, under [`FakeSource::IDS`]) has a queue of failing answers; a call
/// takes the next one, and answers normally once the queue is empty. Every call is counted.
#[derive(Debug, Default)]
pub struct FakeSource {
    items: BTreeMap<String, RawIoc>,
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
    calls: Mutex<BTreeMap<String, u32>>,
}

impl FakeSource {
    /// The script key of the id listing.
    pub const IDS: &'static str = "<ids>";

    /// A source serving `items`.
    pub fn new(items: impl IntoIterator<Item = RawIoc>) -> Self {
        FakeSource {
            items: items.into_iter().map(|i| (i.id.clone(), i)).collect(),
            ..FakeSource::default()
        }
    }

    /// Makes the next calls for `key` (an id, or [`FakeSource::IDS`]) fail with `answers`, in
    /// order.
    pub fn fail(self, key: &str, answers: impl IntoIterator<Item = Answer>) -> Self {
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_default()
            .extend(answers);
        self
    }

    /// Calls made for `key`.
    pub fn calls(&self, key: &str) -> u32 {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn answer(&self, key: &str) -> Option<Answer> {
        *self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_insert(0) += 1;
        self.script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
            .and_then(VecDeque::pop_front)
    }

    fn ids(&self) -> Result<Vec<String>, SourceError> {
        match self.answer(Self::IDS) {
            Some(Answer::Status(status)) => Err(SourceError::Http { status }),
            Some(Answer::Malformed) => {
                Err(SourceError::Malformed("id list is not an array".into()))
            }
            None => Ok(self.items.keys().cloned().collect()),
        }
    }

    fn get(&self, id: &str) -> Result<RawIoc, SourceError> {
        match self.answer(id) {
            Some(Answer::Status(status)) => Err(SourceError::Http { status }),
            Some(Answer::Malformed) => {
                Err(SourceError::Malformed(format!("ioc {id}: missing `type`")))
            }
            None => self
                .items
                .get(id)
                .cloned()
                .ok_or_else(|| SourceError::NotFound(id.to_owned())),
        }
    }
}

/// The client of the data source: each method is one attempt, made resilient on the blocking
/// engine.
#[derive(Debug, Clone)]
pub struct SourceClient {
    source: Arc<FakeSource>,
}

impl SourceClient {
    /// A client of `source`.
    pub fn new(source: Arc<FakeSource>) -> Self {
        SourceClient { source }
    }

    /// Every id to process.
    #[resilient(
        retries = 3,
        backoff(base = "200ms", max = "2s"),
        breaker = "octi-source",
        idempotent
    )]
    pub fn get_ids(&self) -> Result<Vec<String>, SourceError> {
        self.source.ids()
    }

    /// One item.
    #[resilient(
        retries = 3,
        backoff(base = "200ms", max = "2s"),
        breaker = "octi-source",
        idempotent
    )]
    pub fn get_ioc(&self, id: &str) -> Result<RawIoc, SourceError> {
        self.source.get(id)
    }
}

/// Turns an item into the platform's entity.
///
/// # Errors
///
/// An unsupported type or an empty value.
pub fn convert(ioc: &RawIoc) -> Result<Entity, ConversionError> {
    let value = ioc.value.trim();
    if value.is_empty() {
        return Err(ConversionError::EmptyValue(ioc.id.clone()));
    }
    let value = value.to_owned();
    match ioc.kind.as_str() {
        "domain" => Ok(Entity::DomainName { value }),
        "ip" => Ok(Entity::IpAddress { value }),
        "hash" => Ok(Entity::FileHash { value }),
        other => Err(ConversionError::UnsupportedType(other.to_owned())),
    }
}

/// Where entities go (the platform).
pub trait Sink {
    /// Sends one item's entities.
    ///
    /// # Errors
    ///
    /// The platform refused them: unexpected, the run ends in error.
    fn send(&mut self, id: &str, entity: Entity) -> Result<(), RunError>;
}

impl Sink for Vec<Entity> {
    fn send(&mut self, _id: &str, entity: Entity) -> Result<(), RunError> {
        self.push(entity);
        Ok(())
    }
}

/// An item that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The item.
    pub id: String,
    /// `retrieval` or `conversion`.
    pub stage: &'static str,
    /// The error's class for a retrieval error (`transient`, `permanent`, ...).
    pub class: Option<String>,
    /// The error and its sources.
    pub reason: String,
}

/// How a run went (seed 004's `to_processed(..., in_error)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkReport {
    /// Ids listed.
    pub listed: usize,
    /// Items sent.
    pub processed: usize,
    /// Items skipped with a WARN.
    pub skipped: Vec<Skipped>,
    /// Whether the source could not even list the ids (a WARN; the run is not in error).
    pub source_unreachable: Option<String>,
    /// Whether the run ended in error, and why.
    pub error: Option<String>,
    /// Retries the engine made.
    pub retries: u64,
}

impl WorkReport {
    /// Whether the run ended in error.
    pub fn in_error(&self) -> bool {
        self.error.is_some()
    }
}

/// Retries made so far by the sites of this example, in the registry in force.
fn retries() -> u64 {
    resilience_runtime::Registry::current()
        .metrics()
        .sites
        .iter()
        .filter(|s| s.module.starts_with(module_path!()))
        .map(|s| s.metrics.retries)
        .sum()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The connector: the client, the converter and the sink.
#[derive(Debug)]
pub struct Connector<S> {
    client: SourceClient,
    sink: S,
}

impl<S: Sink> Connector<S> {
    /// A connector reading from `client` and sending to `sink`.
    pub fn new(client: SourceClient, sink: S) -> Self {
        Connector { client, sink }
    }

    /// The sink, with what was sent.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// One item: fetch, convert, send. Retrieval and conversion errors are the item's; a send
    /// error is the run's.
    fn etl(&mut self, id: &str) -> Result<Result<(), ItemError>, RunError> {
        let ioc = match self.client.get_ioc(id) {
            Ok(ioc) => ioc,
            Err(source) => {
                return Ok(Err(DataRetrievalError {
                    what: id.to_owned(),
                    source,
                }
                .into()));
            }
        };
        let entity = match convert(&ioc) {
            Ok(e) => e,
            Err(e) => return Ok(Err(e.into())),
        };
        self.sink.send(id, entity)?;
        Ok(Ok(()))
    }

    /// The run: list the ids, process each, skip what cannot be retrieved or converted with a WARN,
    /// and end in error on anything unexpected (a send failure, a panic).
    pub fn work(&mut self) -> WorkReport {
        let mut report = WorkReport::default();
        let retries_before = retries();
        let outcome = catch_unwind(AssertUnwindSafe(|| self.work_inner(&mut report)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "unexpected error; the run is marked in error");
                report.error = Some(e.to_string());
            }
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                let e = RunError::Panic(msg);
                tracing::error!(error = %e, "unexpected error; the run is marked in error");
                report.error = Some(e.to_string());
            }
        }
        // `finally`: the run is reported whatever happened.
        report.retries = retries().saturating_sub(retries_before);
        tracing::info!(
            listed = report.listed,
            processed = report.processed,
            skipped = report.skipped.len(),
            in_error = report.in_error(),
            "connector's work finished"
        );
        report
    }

    fn work_inner(&mut self, report: &mut WorkReport) -> Result<(), RunError> {
        let ids = match self.client.get_ids() {
            Ok(ids) => ids,
            Err(source) => {
                let e = DataRetrievalError {
                    what: "the id list".into(),
                    source,
                };
                tracing::warn!(error = %chain(&e), "failed to reach the data source");
                report.source_unreachable = Some(chain(&e));
                return Ok(());
            }
        };
        report.listed = ids.len();
        tracing::debug!(count = ids.len(), "found ids to process");
        for id in &ids {
            match self.etl(id)? {
                Ok(()) => report.processed += 1,
                Err(e) => {
                    tracing::warn!(id = %id, error = %chain(&e), "cannot process {id}; it is skipped");
                    let (stage, class) = match &e {
                        ItemError::Retrieval(r) => {
                            ("retrieval", Some(r.class().as_str().to_owned()))
                        }
                        ItemError::Conversion(_) => ("conversion", None),
                    };
                    report.skipped.push(Skipped {
                        id: id.clone(),
                        stage,
                        class,
                        reason: chain(&e),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The demo data: a dozen indicators, two of an unsupported type, one with an empty value; the
/// source fails some calls transiently (retried), one for good (skipped), and answers one with a
/// malformed body.
pub fn demo_source() -> FakeSource {
    let kinds = ["domain", "ip", "hash"];
    let mut items: Vec<RawIoc> = (1..=12)
        .map(|i| RawIoc {
            id: format!("ioc-{i:02}"),
            kind: kinds[i % 3].to_owned(),
            value: format!("value-{i}"),
        })
        .collect();
    items[4].kind = "email".into();
    items[9].kind = "url".into();
    items[7].value = " ".into();
    FakeSource::new(items)
        .fail(FakeSource::IDS, [Answer::Status(503)])
        .fail("ioc-02", [Answer::Status(429), Answer::Status(500)])
        .fail("ioc-03", [Answer::Status(502)])
        .fail("ioc-06", [Answer::Status(503); 4])
        .fail("ioc-11", [Answer::Malformed])
}
