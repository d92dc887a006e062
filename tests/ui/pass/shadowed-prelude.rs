//! The expansion names nothing from the user's scope: user types named `Result`, `Ok`, `Err`,
//! `Option`, `Some`, `None`, `Clone`, `Duration`, `FnOnce`, `PhantomData` and `bool`, or a macro
//! `env`, do not break it.
#![deny(warnings)]
#![allow(non_camel_case_types, dead_code)]

use resilience_runtime::{ConnectorError, resilient};

struct Option;
struct Some;
struct None;
struct Ok;
struct Err;
struct Clone;
struct Duration;
struct Future;
struct FnOnce;
struct PhantomData;
struct bool;
trait ToString {}
trait AsRef {}
// Nor a user macro named `env` (the default `connector` label is the crate's name).
#[allow(unused_macros)]
macro_rules! env {
    ($($t:tt)*) => {
        compile_error!("the user's `env!`")
    };
}

#[derive(Debug, ConnectorError)]
enum ApiError {
    #[connector(transient)]
    Busy,
    #[connector(permanent)]
    Conflict,
    #[connector(rejected)]
    Rejected(resilience_runtime::Rejected),
}

type Result<T> = core::result::Result<T, ApiError>;

fn fallback(e: ApiError) -> Result<u32> {
    core::result::Result::Err(e)
}

#[resilient(
    retries = 2,
    idempotency_key = name.len(),
    breaker = "b",
    breaker_key = name.as_str(),
    timeout = "1s",
    retry_on = [ApiError::Conflict],
    fallback = fallback
)]
async fn fetch(name: String) -> Result<u32> {
    core::result::Result::Ok(name.len() as u32)
}

fn main() {}
