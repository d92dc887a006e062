//! The tower layer in a real tower stack: a hyper client against a local axum server, sharing
//! its breaker, budget and metrics with a site driven by the engine (features `tower`, `http`).
#![cfg(all(feature = "tower", feature = "http"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header::RETRY_AFTER};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use resilience_runtime::backoff::{Backoff, Jitter};
use resilience_runtime::breaker::{BreakerConfig, BreakerState};
use resilience_runtime::engine::{Hooks, Policy, Site, execute};
use resilience_runtime::tower::{Error, HttpStatus, ResilienceLayer};
use resilience_runtime::{CarriesRejected, Classify, ErrorClass, Registry, Rejected};
use tower::{Service, ServiceBuilder, ServiceExt};

const FAST: Backoff = Backoff::new()
    .with_base(Duration::from_millis(5))
    .with_max(Duration::from_millis(20))
    .with_jitter(Jitter::None);

/// A server that fails the first `failures` requests with 503 (and a fractional Retry-After),
/// then answers 200; it counts requests.
async fn server(failures: usize) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/devices",
        axum::routing::get(move || {
            let n = h.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut headers = HeaderMap::new();
                if n < failures {
                    headers.insert(RETRY_AFTER, HeaderValue::from_static("0.01"));
                    (StatusCode::SERVICE_UNAVAILABLE, headers, "busy")
                } else {
                    (StatusCode::OK, headers, "devices")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/devices"), hits)
}

fn request(url: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(url)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn a_hyper_client_behind_the_layer_retries_503_and_counts_in_the_registry() {
    let (url, hits) = server(2).await;
    let registry = Registry::new().with_seed(1);
    let layer = ResilienceLayer::new(
        Policy::new("list_devices_http", "graph::http")
            .with_retries(3)
            .idempotent()
            .with_backoff(FAST)
            .with_breaker("graph-http")
            .with_timeout(Duration::from_secs(5)),
    )
    .with_classifier(HttpStatus)
    .with_registry(registry.clone());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut svc = ServiceBuilder::new().layer(layer).service(client);

    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request(&url))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    let m = registry.metrics();
    let site = m.site("list_devices_http").unwrap();
    // The label is the policy's crate (its module path's first segment), not its breaker.
    assert_eq!(site.connector, "graph");
    assert_eq!(site.metrics.ok, 1);
    assert_eq!(site.metrics.retries, 2);
    assert_eq!(site.metrics.retry_successes, 1);
}

#[tokio::test]
async fn the_last_failing_response_is_handed_back_when_retries_run_out() {
    let (url, hits) = server(usize::MAX).await;
    let registry = Registry::new();
    let layer = ResilienceLayer::new(
        Policy::new("flaky", "t")
            .with_retries(2)
            .idempotent()
            .with_backoff(FAST),
    )
    .with_classifier(HttpStatus)
    .with_registry(registry.clone());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let res = layer
        .layer_service(client)
        .oneshot(request(&url))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(
        registry
            .metrics()
            .site("flaky")
            .unwrap()
            .metrics
            .errors
            .transient,
        1
    );
}

// Helper: `Layer::layer` without importing the trait at every call.
trait LayerExt<S> {
    type Out;
    fn layer_service(&self, s: S) -> Self::Out;
}
impl<S, L: tower::Layer<S>> LayerExt<S> for L {
    type Out = L::Service;
    fn layer_service(&self, s: S) -> L::Service {
        self.layer(s)
    }
}

#[derive(Debug)]
enum GraphError {
    Busy,
    Rejected(Rejected),
}
impl Classify for GraphError {
    fn class(&self) -> ErrorClass {
        match self {
            GraphError::Busy => ErrorClass::Transient,
            GraphError::Rejected(r) => r.class(),
        }
    }
}
impl CarriesRejected for GraphError {
    fn from_rejected(r: Rejected) -> Self {
        GraphError::Rejected(r)
    }
    fn rejected(&self) -> Option<&Rejected> {
        match self {
            GraphError::Rejected(r) => Some(r),
            GraphError::Busy => None,
        }
    }
}

/// What `#[resilient(breaker = "graph")]` generates, driven by hand.
static ANNOTATED: Site =
    Site::new(&Policy::new("list_users", "graph::client").with_breaker("graph"));

#[tokio::test]
async fn the_layer_and_an_annotated_site_share_one_breaker() {
    let registry = Registry::new();
    registry
        .configure_breaker("graph", BreakerConfig::new().with_failure_threshold(3))
        .unwrap();

    // The annotated method fails twice: 2 of 3 failures.
    registry
        .scope(async {
            for _ in 0..2 {
                let r: Result<(), GraphError> = execute(
                    &ANNOTATED,
                    Hooks::new().with_from_rejected(GraphError::Rejected),
                    || async { Err(GraphError::Busy) },
                )
                .await;
                assert!(matches!(r, Err(GraphError::Busy)));
            }
        })
        .await;
    assert_eq!(registry.breaker("graph").state(), BreakerState::Closed);

    // One 503 through the tower client is the third failure: the breaker opens.
    let (url, hits) = server(usize::MAX).await;
    let layer = ResilienceLayer::new(Policy::new("graph_raw", "graph::http").with_breaker("graph"))
        .with_classifier(HttpStatus)
        .with_registry(registry.clone());
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut svc = ServiceBuilder::new().layer(layer).service(client);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(request(&url))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(registry.breaker("graph").state(), BreakerState::Open);

    // Now both sides are rejected without reaching the server.
    let e = svc
        .ready()
        .await
        .unwrap()
        .call(request(&url))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Rejected(Rejected::CircuitOpen { .. })),
        "{e:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let r: Result<(), GraphError> = registry
        .scope(execute(
            &ANNOTATED,
            Hooks::new().with_from_rejected(GraphError::Rejected),
            || async { Ok(()) },
        ))
        .await;
    assert!(matches!(
        r,
        Err(GraphError::Rejected(Rejected::CircuitOpen { .. }))
    ));
}

#[tokio::test]
async fn a_per_attempt_timeout_applies_to_the_inner_service() {
    let registry = Registry::new();
    let slow = tower::service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<_, std::io::Error>("late")
    });
    let layer =
        ResilienceLayer::new(Policy::new("slow", "t").with_timeout(Duration::from_millis(20)))
            .with_classifier(HttpStatusOrIo)
            .with_registry(registry.clone());
    let e = layer.layer_service(slow).oneshot(()).await.unwrap_err();
    assert!(
        matches!(e, Error::Rejected(Rejected::AttemptTimeout { .. })),
        "{e:?}"
    );
    // Counted as the rejection that ended it, not as a transient error.
    let m = registry.metrics();
    let slow = &m.site("slow").unwrap().metrics;
    assert_eq!(slow.errors.transient, 0);
    assert_eq!(slow.rejections.get("timeout"), Some(1));
    assert_eq!(slow.rejected, 1);
}

/// A classifier for a plain service: every response a success, I/O errors transient.
#[derive(Clone, Copy, Debug)]
struct HttpStatusOrIo;
impl<R> resilience_runtime::tower::Classifier<R, std::io::Error> for HttpStatusOrIo {
    fn classify_response(&self, _: &R) -> Option<resilience_runtime::tower::Failure> {
        None
    }
    fn classify_error(&self, _: &std::io::Error) -> resilience_runtime::tower::Failure {
        resilience_runtime::tower::Failure::new(ErrorClass::Transient)
    }
}

/// Building a layer again with an equal policy reuses its site: nothing piles up per build, and
/// the calls of every copy count on one site.
#[test]
fn layers_built_from_equal_policies_share_one_site() {
    let policy = || {
        Policy::new("layer_reuse", module_path!())
            .with_retries(1)
            .idempotent()
    };
    let first = ResilienceLayer::new(policy()).site();
    for _ in 0..10_000 {
        assert!(std::ptr::eq(ResilienceLayer::new(policy()).site(), first));
    }
    let other = ResilienceLayer::new(policy().with_retries(2)).site();
    assert!(!std::ptr::eq(other, first), "another policy, another site");
}

/// A service that answers `first` (status and headers) to its first request and 200 after,
/// counting requests.
fn answers(
    first: StatusCode,
    headers: HeaderMap,
) -> (
    impl Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<String>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    Arc<AtomicUsize>,
) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let svc = tower::service_fn(move |_req: http::Request<Full<Bytes>>| {
        let n = h.fetch_add(1, Ordering::SeqCst);
        let headers = headers.clone();
        async move {
            let mut res = http::Response::new(String::new());
            if n == 0 {
                *res.status_mut() = first;
                *res.headers_mut() = headers;
            }
            Ok(res)
        }
    });
    (svc, hits)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_layer_takes_an_http_classifier_that_reads_github_rate_limits() {
    let layer = || {
        ResilienceLayer::new(
            Policy::new("github_http", "github::http")
                .with_retries(2)
                .idempotent()
                .with_backoff(Backoff::new().with_jitter(Jitter::None)),
        )
        .with_classifier(resilience_runtime::http::Classifier::github())
        .with_registry(Registry::new())
    };

    // GitHub's secondary rate limit: a 403 with `retry-after`, retried after it.
    let mut limited = HeaderMap::new();
    limited.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    let (inner, hits) = answers(StatusCode::FORBIDDEN, limited);
    let mut svc = ServiceBuilder::new().layer(layer()).service(inner);
    let start = tokio::time::Instant::now();
    let res = svc.ready().await.unwrap().call(request("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // A plain 403 is a refused permission: handed back at once, not retried.
    let (inner, hits) = answers(StatusCode::FORBIDDEN, HeaderMap::new());
    let mut svc = ServiceBuilder::new().layer(layer()).service(inner);
    let start = tokio::time::Instant::now();
    let res = svc.ready().await.unwrap().call(request("/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[derive(Debug, resilience_runtime::ConnectorError)]
enum LockError {
    #[connector(transient, breaker = "ignored")]
    Locked,
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_inner_error_says_how_the_breaker_counts_it_through_the_layer() {
    let registry = Registry::new();
    registry
        .configure_breaker("locks-http", BreakerConfig::new().with_failure_threshold(1))
        .unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let inner = tower::service_fn(move |_req: http::Request<Full<Bytes>>| {
        h.fetch_add(1, Ordering::SeqCst);
        async { Err::<http::Response<String>, _>(LockError::Locked) }
    });
    let layer =
        ResilienceLayer::new(Policy::new("locked_http", "store::http").with_breaker("locks-http"))
            .with_registry(registry.clone());
    let mut svc = ServiceBuilder::new().layer(layer).service(inner);
    for _ in 0..3 {
        let r = svc.ready().await.unwrap().call(request("/")).await;
        assert!(matches!(r, Err(Error::Service(LockError::Locked))), "{r:?}");
    }
    // Transient, but `breaker = "ignored"`: three calls through a breaker that opens on one
    // failure, all sent.
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(registry.breaker("locks-http").state(), BreakerState::Closed);
}
