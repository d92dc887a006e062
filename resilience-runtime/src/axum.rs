//! A health endpoint for [`axum`](https://docs.rs/axum) (feature `axum`).
//!
//! [`Health`] serves [`Registry::health`] as JSON: `200 OK` while every critical breaker is closed
//! or half-open, `503 Service Unavailable` when one is open. Breakers not named critical are
//! reported but do not fail the check (an outage of an optional dependency should not take the
//! service out of its load balancer). A per-key breaker is critical when named in full
//! (`okta/tenant-1`); naming the base (`okta`) makes every key of it critical.
//!
//! ```
//! use resilience_runtime::{axum::Health, Registry};
//!
//! let app: axum::Router = Health::new(Registry::global().clone())
//!     .with_critical(["graph"])
//!     .router("/health");
//! # let _ = app;
//! ```
//!
//! The body:
//!
//! ```json
//! {"healthy":false,"critical_open":["graph"],"breakers":[{"name":"graph","key":null,"state":"open","gauge":1,"failures":5,"opened_total":1,"probes_in_flight":0,"time_in_state_ms":1200}]}
//! ```

use std::sync::Arc;

use ::axum::Json;
use ::axum::extract::State;
use ::axum::http::StatusCode;
use ::axum::response::{IntoResponse, Response};

use crate::Registry;
use crate::breaker::BreakerState;
use crate::registry::HealthReport;

/// The health check of a registry, with its critical breakers.
#[derive(Debug, Clone)]
pub struct Health {
    registry: Registry,
    critical: Arc<[String]>,
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
        }
    }

    /// Names the breakers whose opening makes the service unavailable.
    pub fn with_critical(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Health {
        self.critical = names.into_iter().map(Into::into).collect();
        self
    }

    /// The check now: the status and the body.
    pub fn check(&self) -> (StatusCode, HealthBody) {
        let report = self.registry.health();
        let critical_open: Vec<String> = report
            .breakers
            .iter()
            .filter(|b| b.state == BreakerState::Open)
            .filter(|b| {
                self.critical.iter().any(|c| {
                    *c == b.name
                        || (b.key.is_some()
                            && b.name
                                .strip_prefix(c.as_str())
                                .is_some_and(|rest| rest.starts_with('/')))
                })
            })
            .map(|b| b.name.clone())
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
