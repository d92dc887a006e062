//! Procedural macros for [`resilience-runtime`](https://docs.rs/resilience-runtime).
//!
//! Depend on `resilience-runtime`, which re-exports both macros and documents every key; the
//! generated code names only `::resilience_runtime::__private`.
//!
//! - `#[resilient(...)]` turns a fn whose body is one attempt of an operation into a resilient
//!   call: retries with backoff, Retry-After, circuit breakers, timeouts, deadlines, limiters,
//!   fallbacks and credential refresh, with the policy checked at compile time.
//! - `#[derive(ConnectorError)]` classifies an error type (`transient`, `permanent`, `policy`,
//!   `auth`, terminal reasons, HTTP statuses) and lets it carry the runtime's rejections.
//!
//! Each macro is three phases in its own modules: parse (darling), validate (into a finished
//! config, every error collected) and expand. Bad input is a compile error spanned on the
//! offending token; the macros never panic and always emit the user's item.

mod connector;
mod diag;
mod duration;
mod resilient;

use proc_macro::TokenStream;

/// Makes a fn resilient. See `resilience_runtime` for the documentation of every key.
#[proc_macro_attribute]
pub fn resilient(args: TokenStream, item: TokenStream) -> TokenStream {
    resilient::resilient(args.into(), item.into()).into()
}

/// Derives `Classify` (and `CarriesRejected`) for a connector error. See `resilience_runtime` for
/// the documentation.
#[proc_macro_derive(ConnectorError, attributes(connector))]
pub fn derive_connector_error(input: TokenStream) -> TokenStream {
    connector::derive(input.into()).into()
}

/// The key of a variant's name by which the derive declares the variant's kind
/// (`__private::VariantKind<KEY>`) and `#[resilient]` asks for it (`retry_on`, `abort_on`):
/// FNV-1a over the name as written.
pub(crate) fn variant_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
