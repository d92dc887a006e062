//! MicroProfile Fault Tolerance TCK / Resilience4j / Polly scenarios ported to
//! `#[resilient(...)]` and a TOML `RegistryConfig`, on tokio's paused clock.
//!
//! Each test says where its expectation comes from:
//! - `docs:` a line of README.md, docs/attributes.md, RELIABILITY.md or rustdoc;
//! - `peer (docs silent):` what MicroProfile FT / Resilience4j would do where the docs say nothing;
//! - `documented divergence:` the docs choose differently from a peer on purpose (the test asserts
//!   the docs and names the peer's behaviour): no minimum number of calls and no slow-call rate in
//!   ratio mode, GCRA rather than fixed refresh periods, a bulkhead with no waiting queue, 501/505/
//!   507/511 not retried, permanent/policy/auth errors neutral to the breaker, the fallback outside
//!   the deadline, a retry counted when it is decided.
//!
//! `conformance_global.rs` runs a part of them again on the process-wide registry, without
//! `Registry::scope`, as a connector runs.

mod common;

mod breaker;
mod bulkhead;
mod combined;
mod edge;
mod extra;
mod fallback;
mod more;
mod rate_limit;
mod retry;
mod timeout;
