//! A [`tower`](https://docs.rs/tower) layer from the same policy and registry as `#[resilient]`
//! (feature `tower`).
//!
//! [`ResilienceLayer`] runs each request through the engine's call machine, as `#[resilient]` does: deadline, retries with
//! backoff and Retry-After, the named circuit breaker, rate limit, per-attempt timeout and
//! bulkhead, in the order of [`engine`](crate::engine). The breaker, the retry budget and the
//! limits are the registry's named instances, so a tower, hyper or tonic client shares them with
//! the annotated methods that name the same breaker, and its calls are counted in
//! [`Registry::metrics`] under the layer's operation. Their `connector` label is the policy's
//! [`Policy::with_connector`], else the first segment of its module path (the crate's name, for
//! `module_path!()`): set it to the label of the annotated methods of the same connector, so
//! that their series add up.
//!
//! A [`Classifier`] says which outcomes are failures: [`ErrorsOnly`] (errors classified by
//! [`Classify`], every response a success) or, with the `http` feature, [`HttpStatus`] (4xx and 5xx
//! responses by the status table, with their `Retry-After`; transport errors transient) or an
//! [`http::Classifier`](crate::http::Classifier) (4xx and 5xx responses by its rules, such as
//! GitHub's rate-limited 403s; transport errors transient). When the last attempt got a failing
//! response, the caller gets that response back, as without the layer.
//!
//! ```
//! # #[cfg(feature = "http")] {
//! use resilience_runtime::engine::Policy;
//! use resilience_runtime::http;
//! use resilience_runtime::tower::ResilienceLayer;
//!
//! let layer = ResilienceLayer::new(Policy::new("github_http", module_path!()).with_retries(3).idempotent())
//!     .with_classifier(http::Classifier::github());
//! # let _ = layer;
//! # }
//! ```
//!
//! Retrying re-sends the request, so the request type must be `Clone` (for `http::Request<B>`,
//! a `Clone` body such as `Full<Bytes>` or `String`).
//!
//! ```
//! use std::time::Duration;
//! use resilience_runtime::engine::Policy;
//! use resilience_runtime::tower::{ErrorsOnly, ResilienceLayer};
//!
//! let layer = ResilienceLayer::new(
//!     Policy::new("graph_http", module_path!())
//!         .with_retries(3)
//!         .idempotent()
//!         .with_breaker("graph")
//!         .with_timeout(Duration::from_secs(10))
//!         .with_connector("graph"),
//! );
//! # let _: &ResilienceLayer<ErrorsOnly> = &layer;
//! // tower::ServiceBuilder::new().layer(layer).service(client)
//! ```

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::Outcome;
use crate::engine::{Hooks, NoKey, Policy, Site, Slot, Step};
use crate::{Classify, ErrorClass, Registry, Rejected};

/// What a [`Classifier`] says about a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failure {
    /// The class.
    pub class: ErrorClass,
    /// The server's wait hint.
    pub retry_after: Option<Duration>,
    /// A short code (`"503"`).
    pub code: Option<String>,
    /// How the breaker counts it, when not as its class says ([`Classify::breaker_outcome`]).
    pub breaker_outcome: Option<Outcome>,
}

impl Failure {
    /// A failure of `class`.
    pub fn new(class: ErrorClass) -> Failure {
        Failure {
            class,
            retry_after: None,
            code: None,
            breaker_outcome: None,
        }
    }

    /// Sets the wait hint.
    pub fn with_retry_after(mut self, d: Option<Duration>) -> Failure {
        self.retry_after = d;
        self
    }

    /// Sets the code.
    pub fn with_code(mut self, code: Option<&str>) -> Failure {
        self.code = code.map(str::to_owned);
        self
    }

    /// Sets how the breaker counts it (`None`: as its class says).
    pub fn with_breaker_outcome(mut self, outcome: Option<Outcome>) -> Failure {
        self.breaker_outcome = outcome;
        self
    }
}

/// Decides which outcomes of the inner service are failures.
pub trait Classifier<Res, E> {
    /// `None` when the response is a success.
    fn classify_response(&self, response: &Res) -> Option<Failure>;
    /// The class of an error of the inner service.
    fn classify_error(&self, error: &E) -> Failure;
}

/// Every response is a success; errors are classified by their [`Classify`] impl.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsOnly;

impl<Res, E: Classify> Classifier<Res, E> for ErrorsOnly {
    fn classify_response(&self, _: &Res) -> Option<Failure> {
        None
    }
    fn classify_error(&self, e: &E) -> Failure {
        Failure::new(e.class())
            .with_retry_after(e.retry_after())
            .with_code(e.code())
            .with_breaker_outcome(e.breaker_outcome())
    }
}

/// HTTP responses: 4xx and 5xx are failures, classified by the status table with their
/// `Retry-After`; errors of the inner service (connect, I/O) are transient.
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStatus;

#[cfg(feature = "http")]
impl<B, E> Classifier<::http::Response<B>, E> for HttpStatus {
    fn classify_response(&self, response: &::http::Response<B>) -> Option<Failure> {
        let e = crate::http::StatusError::from_response(response)?;
        Some(
            Failure::new(e.class())
                .with_retry_after(e.retry_after())
                .with_code(e.code()),
        )
    }
    fn classify_error(&self, _: &E) -> Failure {
        Failure::new(ErrorClass::Transient).with_code(Some("transport"))
    }
}

/// HTTP responses: 4xx and 5xx are failures, with the classifier's verdict (class and wait hint);
/// errors of the inner service (connect, I/O) are transient.
#[cfg(feature = "http")]
impl<B, E> Classifier<::http::Response<B>, E> for crate::http::Classifier {
    fn classify_response(&self, response: &::http::Response<B>) -> Option<Failure> {
        let e = self.error(response.status(), response.headers())?;
        Some(
            Failure::new(e.class())
                .with_retry_after(e.retry_after())
                .with_code(e.code()),
        )
    }
    fn classify_error(&self, _: &E) -> Failure {
        Failure::new(ErrorClass::Transient).with_code(Some("transport"))
    }
}

/// The layer's error: the inner service's, or a rejection of the runtime.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The inner service failed on the last attempt.
    Service(E),
    /// The runtime refused or stopped the call (open circuit, timeout, deadline, limit).
    Rejected(Rejected),
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Service(e) => e.fmt(f),
            Error::Rejected(r) => r.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Service(e) => Some(e),
            Error::Rejected(r) => Some(r),
        }
    }
}

impl<E: Classify> Classify for Error<E> {
    fn class(&self) -> ErrorClass {
        match self {
            Error::Service(e) => e.class(),
            Error::Rejected(r) => r.class(),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Service(e) => e.retry_after(),
            Error::Rejected(r) => r.retry_after(),
        }
    }
    fn code(&self) -> Option<&str> {
        match self {
            Error::Service(e) => e.code(),
            Error::Rejected(r) => r.code(),
        }
    }
    fn breaker_outcome(&self) -> Option<Outcome> {
        match self {
            Error::Service(e) => e.breaker_outcome(),
            Error::Rejected(r) => r.breaker_outcome(),
        }
    }
}

/// One attempt's failure, inside the engine.
enum Attempt<Res, E> {
    Response(Res, Failure),
    Service(E, Failure),
    Rejected(Rejected),
}

impl<Res, E> Classify for Attempt<Res, E> {
    fn class(&self) -> ErrorClass {
        match self {
            Attempt::Response(_, f) | Attempt::Service(_, f) => f.class,
            Attempt::Rejected(r) => r.class(),
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Attempt::Response(_, f) | Attempt::Service(_, f) => f.retry_after,
            Attempt::Rejected(r) => r.retry_after(),
        }
    }
    fn code(&self) -> Option<&str> {
        match self {
            Attempt::Response(_, f) | Attempt::Service(_, f) => f.code.as_deref(),
            Attempt::Rejected(r) => r.code(),
        }
    }
    fn breaker_outcome(&self) -> Option<Outcome> {
        match self {
            Attempt::Response(_, f) | Attempt::Service(_, f) => f.breaker_outcome,
            Attempt::Rejected(r) => r.breaker_outcome(),
        }
    }
}

impl<Res, E> fmt::Debug for Attempt<Res, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attempt::Response(..) => "Response",
            Attempt::Service(..) => "Service",
            Attempt::Rejected(..) => "Rejected",
        })
    }
}

/// Applies a [`Policy`] to a tower service.
#[derive(Clone)]
pub struct ResilienceLayer<C = ErrorsOnly> {
    site: &'static Site,
    classifier: C,
    registry: Option<Registry>,
}

impl<C: fmt::Debug> fmt::Debug for ResilienceLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResilienceLayer")
            .field("site", self.site)
            .field("classifier", &self.classifier)
            .field("registry", &self.registry)
            .finish()
    }
}

impl ResilienceLayer<ErrorsOnly> {
    /// A layer for `policy`. Its site lives for the program, and is made once per distinct
    /// policy: building the layer again with an equal policy (per request, per client) reuses
    /// the site, its breaker, budget and counters, and allocates nothing that stays.
    pub fn new(policy: Policy) -> Self {
        /// Every site a layer made, looked up by policy when a layer is built (not per call).
        static SITES: std::sync::Mutex<Vec<&'static Site>> = std::sync::Mutex::new(Vec::new());
        let mut sites = SITES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(site) = sites.iter().find(|s| *s.policy() == policy) {
            return Self::from_site(site);
        }
        let policy: &'static Policy = Box::leak(Box::new(policy));
        let site: &'static Site = Box::leak(Box::new(Site::new(policy)));
        sites.push(site);
        Self::from_site(site)
    }

    /// A layer for a `static` site, shared with code that drives the same site.
    pub fn from_site(site: &'static Site) -> Self {
        ResilienceLayer {
            site,
            classifier: ErrorsOnly,
            registry: None,
        }
    }
}

impl<C> ResilienceLayer<C> {
    /// Uses `classifier` to tell failures from successes.
    pub fn with_classifier<C2>(self, classifier: C2) -> ResilienceLayer<C2> {
        ResilienceLayer {
            site: self.site,
            classifier,
            registry: self.registry,
        }
    }

    /// Uses `registry`'s breakers, budgets, limits and metrics instead of the registry in force
    /// where the request is sent ([`Registry::current`]).
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The layer's site.
    pub fn site(&self) -> &'static Site {
        self.site
    }
}

impl<S, C: Clone> Layer<S> for ResilienceLayer<C> {
    type Service = Resilient<S, C>;

    fn layer(&self, inner: S) -> Resilient<S, C> {
        Resilient {
            inner,
            site: self.site,
            classifier: self.classifier.clone(),
            registry: self.registry.clone(),
        }
    }
}

/// The service [`ResilienceLayer`] makes.
#[derive(Clone)]
pub struct Resilient<S, C = ErrorsOnly> {
    inner: S,
    site: &'static Site,
    classifier: C,
    registry: Option<Registry>,
}

impl<S, C> fmt::Debug for Resilient<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resilient")
            .field("site", self.site)
            .finish_non_exhaustive()
    }
}

/// The future of [`Resilient`].
pub type ResponseFuture<Res, E> = Pin<Box<dyn Future<Output = Result<Res, Error<E>>> + Send>>;

impl<S, C, Req> Service<Req> for Resilient<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    C: Classifier<S::Response, S::Error> + Clone + Send + Sync + 'static,
    Req: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    /// Always ready: the inner service's readiness is awaited per attempt, inside the call.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        let fut = drive(self.site, svc, self.classifier.clone(), req);
        match &self.registry {
            Some(r) => Box::pin(r.scope(fut)),
            None => Box::pin(fut),
        }
    }
}

async fn drive<S, C, Req>(
    site: &'static Site,
    mut svc: S,
    classifier: C,
    req: Req,
) -> Result<S::Response, Error<S::Error>>
where
    S: Service<Req>,
    C: Classifier<S::Response, S::Error>,
    Req: Clone,
{
    let hooks = Hooks::new().with_from_rejected(Attempt::Rejected);
    let mut slot: Slot<_, _, _, _, NoKey> = Slot::new(site, hooks);
    let result = loop {
        let req = req.clone();
        let (svc, classifier) = (&mut svc, &classifier);
        let attempt = async move {
            if let Err(e) = poll_fn(|cx| svc.poll_ready(cx)).await {
                let f = classifier.classify_error(&e);
                return Err(Attempt::Service(e, f));
            }
            match svc.call(req).await {
                Ok(res) => match classifier.classify_response(&res) {
                    None => Ok(res),
                    Some(f) => Err(Attempt::Response(res, f)),
                },
                Err(e) => {
                    let f = classifier.classify_error(&e);
                    Err(Attempt::Service(e, f))
                }
            }
        };
        match slot.attempt_timed(attempt).await {
            Step::Ok(v) => break Ok(v),
            Step::Err(e) => break Err(e),
            // The layer has no refresh: its hooks never ask for one.
            Step::Refresh | Step::Retry | Step::Wait(_) => {}
        }
    };
    match result {
        Ok(res) | Err(Attempt::Response(res, _)) => Ok(res),
        Err(Attempt::Service(e, _)) => Err(Error::Service(e)),
        Err(Attempt::Rejected(r)) => Err(Error::Rejected(r)),
    }
}
