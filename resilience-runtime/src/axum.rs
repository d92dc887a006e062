//! A health endpoint for [`axum`](https://docs.rs/axum) (feature `axum`).
//!
//! [`Health`] serves [`Registry::health`] as JSON: `200 OK` while every critical breaker is closed
//! or half-open, `503 Service Unavailable` when one is open. Breakers not named critical are
//! reported but do not fail the check (an outage of an optional dependency should not take the
//! service out of its load balancer).
//!
//! A per-key base (`breaker_key`, one breaker per tenant) is summarised rather than listed: its
//! key count by state and its ten worst keys, so the body stays small with a million tenants.
//! Naming the base critical (`okta`) fails the check when more than a share of its keys is open
//! (half by default, [`Health::with_critical_open_share`]), not when one tenant's is; naming one
//! key (`okta/tenant-1`) makes that key critical. A key of a base whose keys are sensitive is
//! named as the report shows it (`okta/key#662a463828fd728b`), so that no secret is written in
//! the health check's configuration.
//!
//! ```
//! use resilience_runtime::{axum::Health, Registry};
//!
//! let app: axum::Router = Health::new(Registry::global().clone())
//!     .with_critical(["graph", "okta"])
//!     .router("/health");
//! # let _ = app;
//! ```
//!
//! The body:
//!
//! ```json
//! {"healthy":false,"critical_open":["graph"],
//!  "breakers":[{"name":"graph","key":null,"state":"open","gauge":1,"failures":5,"opened_total":1,"probes_in_flight":0,"time_in_state_ms":1200}],
//!  "keyed":[{"name":"okta","keys":1200,"open":3,"half_open":0,"closed":1197,
//!            "worst":[{"name":"okta/tenant-9","key":"tenant-9","state":"open","gauge":1,"failures":5,"opened_total":1,"probes_in_flight":0,"time_in_state_ms":800}]}]}
//! ```

use std::sync::Arc;

use ::axum::Json;
use ::axum::extract::State;
use ::axum::http::StatusCode;
use ::axum::response::{IntoResponse, Response};

use crate::Registry;
use crate::breaker::BreakerState;
use crate::registry::{HealthReport, KeyedHealth};

/// The health check of a registry, with its critical breakers.
#[derive(Debug, Clone)]
pub struct Health {
    registry: Registry,
    critical: Arc<[String]>,
    open_share: f64,
}

/// The JSON body [`Health`] serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthBody {
    /// The critical breakers that are open (empty when the status is 200).
    pub critical_open: Vec<String>,
    /// The registry's report.
    #[serde(flatten)]
    pub report: HealthReport,
}

impl Health {
    /// A check of `registry` with no critical breaker (always 200).
    pub fn new(registry: Registry) -> Health {
        Health {
            registry,
            critical: Arc::from([]),
            open_share: KeyedHealth::DEFAULT_OPEN_SHARE,
        }
    }

    /// For a critical per-key base: the share of its keys that may be open before the check
    /// fails (default 0.5). One tenant's open breaker is that tenant's outage, not the
    /// service's; most tenants' is the service's.
    pub fn with_critical_open_share(mut self, share: f64) -> Health {
        self.open_share = if share.is_nan() {
            KeyedHealth::DEFAULT_OPEN_SHARE
        } else {
            share.clamp(0.0, 1.0)
        };
        self
    }

    /// Names the breakers whose opening makes the service unavailable.
    pub fn with_critical(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Health {
        self.critical = names.into_iter().map(Into::into).collect();
        self
    }

    /// The check now: the status and the body.
    pub fn check(&self) -> (StatusCode, HealthBody) {
        let report = self.registry.health();
        let critical_open: Vec<String> = self
            .critical
            .iter()
            .filter(|c| {
                let named = report
                    .breakers
                    .iter()
                    .any(|b| b.name == **c && b.state == BreakerState::Open);
                let base = report
                    .keyed
                    .iter()
                    .any(|k| k.name == **c && k.over_share(self.open_share));
                let key = c.split_once('/').is_some_and(|(base, key)| {
                    self.registry.key_state(base, key) == Some(BreakerState::Open)
                });
                named || base || key
            })
            .cloned()
            .collect();
        let status = if critical_open.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            status,
            HealthBody {
                critical_open,
                report,
            },
        )
    }

    /// A router serving the check at `path` (GET).
    pub fn router(self, path: &str) -> ::axum::Router {
        axum::Router::new()
            .route(path, axum::routing::get(handler))
            .with_state(self)
    }
}

/// The handler, for a router of your own: `.route("/health", get(handler)).with_state(health)`.
pub async fn handler(State(health): State<Health>) -> Response {
    let (status, body) = health.check();
    (status, Json(body)).into_response()
}
