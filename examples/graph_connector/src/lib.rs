//! A Graph/Intune-style connector made resilient with `#[resilient]`, and the fault-injecting
//! server it runs against.
//!
//! - [`server`]: the embedded HTTP server (seeded faults, token expiry, eventual consistency) and
//!   its records, usable by any test.
//! - [`connector`]: the client, written with `#[resilient]` and `#[derive(ConnectorError)]`.
//! - [`report`]: the run's summary, as a table or one JSON object.

pub mod connector;
pub mod report;
pub mod server;
