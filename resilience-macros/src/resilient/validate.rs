//! Validate: raw arguments and the fn's signature in, a finished, defaulted [`Config`] out.
//!
//! One `check_*` function per rule; every rule runs, so a user sees every mistake in one build.
//! Expansion takes only the finished config and re-checks nothing.

use std::time::Duration;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use resilience_policy::bounds::MAX_RETRIES;
use resilience_policy::{self as policy, Jitter, Schedule, defaults};
use syn::spanned::Spanned;

use super::parse::{Args, BackoffArgs, Verbatim};
use crate::diag::{Errors, suggestion};
use crate::duration;

/// The finished policy of one site plus what the expansion needs to know about the fn.
pub(crate) struct Config {
    /// The path to the runtime crate (`::resilience_runtime` unless `crate = "..."`).
    pub(crate) krate: TokenStream,
    /// The fn's name.
    pub(crate) operation: String,
    /// `name = "..."`: the site's name, when it is not `<module path>::<fn>`.
    pub(crate) name: Option<String>,
    pub(crate) is_async: bool,
    pub(crate) retries: u32,
    pub(crate) backoff: Schedule,
    pub(crate) idempotent: bool,
    pub(crate) idempotency_key: Option<syn::Expr>,
    pub(crate) breaker: Option<String>,
    pub(crate) breaker_key: Option<syn::Expr>,
    /// `sensitive_key`: the keys of `breaker_key` are shown only redacted.
    pub(crate) sensitive_key: bool,
    pub(crate) timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) retry_on: Vec<syn::Path>,
    pub(crate) abort_on: Vec<syn::Path>,
    pub(crate) fallback: Option<Fallback>,
    /// `retry_if_ok = path`: the verdict on an attempt's `Ok`.
    pub(crate) retry_if_ok: Option<syn::Path>,
    pub(crate) refresh: Option<syn::Path>,
    pub(crate) rate_limit: Option<String>,
    pub(crate) bulkhead: Option<String>,
    /// `budget = "..."`: the retry budget, when it is not the breaker's (or the site's) name.
    pub(crate) budget: Option<String>,
    /// `connector = "..."`: the `connector` label of the site's metrics, when it is not the
    /// crate's name.
    pub(crate) connector: Option<String>,
    /// The declared return type.
    pub(crate) ret: syn::Type,
    pub(crate) receiver: Receiver,
    /// Per-attempt rebinds of the arguments; empty when the body runs at most once.
    pub(crate) rebinds: Vec<Rebind>,
}

impl Config {
    /// Whether the body may run more than once: retries, a credential refresh, or a site marked
    /// safe to repeat, whose retries a configuration may raise at run time.
    pub(crate) fn repeats(&self) -> bool {
        self.retries > 0 || self.refresh.is_some() || self.safe_to_repeat()
    }

    /// Whether the operation is marked safe to repeat (`idempotent` or `idempotency_key`): the
    /// only sites a configuration may give retries.
    pub(crate) fn safe_to_repeat(&self) -> bool {
        self.idempotent || self.idempotency_key.is_some()
    }

    /// Whether the arguments outlive the attempts: when the body may run again, and when a
    /// fallback gets them after the last attempt.
    pub(crate) fn keeps_args(&self) -> bool {
        self.repeats() || self.fallback.is_some()
    }

    /// Whether an attempt may capture by move (`async move`): always when the body runs once
    /// and nothing needs the arguments after it; otherwise if the fn has no `self` or takes
    /// `&self` (a `Copy` reference), since `&mut self` and `self: Arc<Self>` must stay with the
    /// loop (and the fallback).
    pub(crate) fn move_attempt(&self) -> bool {
        !self.keeps_args() || matches!(self.receiver, Receiver::None | Receiver::Shared)
    }

    /// Whether the runtime may reject a call (and so the error type must carry `Rejected`).
    pub(crate) fn may_reject(&self) -> bool {
        self.breaker.is_some()
            || self.timeout.is_some()
            || self.deadline.is_some()
            || self.rate_limit.is_some()
            || self.bulkhead.is_some()
    }
}

/// How the fn takes `self`: for the call to `refresh`, and for how an attempt captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// A free fn or an associated fn without `self`.
    None,
    /// `&self`: passed on as is.
    Shared,
    /// `&mut self`: passed on as is (reborrowed).
    Unique,
    /// `self: Arc<Self>` and other smart pointers: passed on as `&self`.
    Typed,
    /// `self` by value: only legal when the body runs once.
    Value,
}

/// `fallback = path`: what the expansion passes it, and the signature it must have.
pub(crate) struct Fallback {
    pub(crate) path: syn::Path,
    /// `fallback_on`: the variants it takes; empty for every error.
    pub(crate) on: Vec<syn::Path>,
    /// The arguments it gets after the receiver, in order.
    pub(crate) args: Vec<FallbackArg>,
    /// The signature it must have, as written (`fn cached(&self, id: &u64, error: E) -> ..`),
    /// without `async`.
    pub(crate) expected: String,
    /// The error type's name in `expected`, when the return type spells it.
    pub(crate) error_type: Option<String>,
}

/// An argument as the fallback gets it: a shared reference.
pub(crate) struct FallbackArg {
    pub(crate) ident: syn::Ident,
    /// The argument is a reference already (`&T` or `&mut T`): passed as `&T`, not `&&T`.
    pub(crate) is_ref: bool,
}

/// A per-attempt rebinding of an argument, so that every attempt gets a fresh value that it
/// owns (moved into the attempt).
pub(crate) enum Rebind {
    /// A clone (`CloneArg::clone_arg(&x)`), spanned on the argument's type.
    Clone {
        ident: syn::Ident,
        mutability: Option<syn::Token![mut]>,
        span: Span,
    },
    /// A fresh reborrow (`&mut *x`) of a `&mut T` argument.
    Reborrow {
        ident: syn::Ident,
        mutability: Option<syn::Token![mut]>,
    },
}

impl Rebind {
    /// The argument's name, and its `mut` as the user wrote it.
    pub(crate) fn binding(&self) -> (&syn::Ident, Option<&syn::Token![mut]>) {
        match self {
            Rebind::Clone {
                ident, mutability, ..
            }
            | Rebind::Reborrow { ident, mutability } => (ident, mutability.as_ref()),
        }
    }
}

/// Turns the raw arguments and the fn into a finished config, or every error found.
pub(crate) fn validate(
    args: Args,
    item: &syn::ItemFn,
    mut errors: Errors,
) -> Result<Config, Errors> {
    let sig = &item.sig;
    let is_async = sig.asyncness.is_some();
    let operation = sig.ident.to_string().trim_start_matches("r#").to_owned();

    check_not_const(sig, &mut errors);
    check_attempts_keys(&args, &mut errors);
    let name = check_site_name(&args, &mut errors);
    let ret = check_return_type(sig, &mut errors);
    let idempotent = args.idempotent.is_present();
    let retries = check_retries(&args, &mut errors);
    let backoff = check_backoff(&args, &mut errors);
    let timeout = check_async_only(&args, &args.timeout, "timeout", sig, &mut errors);
    let deadline = check_async_only(&args, &args.deadline, "deadline", sig, &mut errors);
    check_timeout_within_deadline(&args, timeout, deadline, &mut errors);
    check_deadline_fits(&args, retries, &backoff, timeout, deadline, &mut errors);
    let breaker = check_name(&args.breaker, "breaker", &mut errors);
    check_breaker_key(&args, &mut errors);
    check_sensitive_key(&args, &mut errors);
    let rate_limit = check_name(&args.rate_limit, "rate_limit", &mut errors);
    let bulkhead = check_name(&args.bulkhead, "bulkhead", &mut errors);
    let budget_lit = string(&args.budget, "budget", "graph", &mut errors);
    let budget = check_name(&budget_lit, "budget", &mut errors);
    let connector = check_connector(&args, &mut errors);
    let retry_on = check_variant_list(&args.retry_on, "retry_on", &mut errors);
    let abort_on = check_variant_list(&args.abort_on, "abort_on", &mut errors);
    check_overrides_disjoint(&retry_on, &abort_on, &mut errors);
    check_lists_say_something(&args, &mut errors);
    check_used_by_retries(&args, retries, &mut errors);
    check_keys_vary(&args, &mut errors);
    // A site safe to repeat loops even with `retries = 0`: a configuration may give it retries.
    let repeats = retries > 0
        || args.refresh.is_some()
        || args.idempotent.is_present()
        || args.idempotency_key.is_some();
    let receiver = check_receiver(sig, &args, retries, repeats, &mut errors);
    let fallback = check_fallback(&args, sig, receiver, &mut errors);
    check_retry_if_ok(&args, &mut errors);
    // The fallback gets the arguments after the attempt: an attempt gets its own copies.
    let rebinds = if repeats || fallback.is_some() {
        rebinds(item)
    } else {
        Vec::new()
    };

    let krate = match &args.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::resilience_runtime),
    };

    match ret {
        Some(ret) if errors.is_empty() => Ok(Config {
            krate,
            operation,
            name,
            is_async,
            retries,
            backoff,
            idempotent,
            idempotency_key: args.idempotency_key.map(|v| v.0),
            breaker,
            sensitive_key: args.sensitive_key.is_present(),
            breaker_key: args.breaker_key.map(|v| v.0),
            timeout,
            deadline,
            retry_on,
            abort_on,
            fallback,
            retry_if_ok: args.retry_if_ok.map(|k| k.value),
            refresh: args.refresh,
            rate_limit,
            bulkhead,
            budget,
            connector,
            ret,
            receiver,
            rebinds,
        }),
        _ => Err(errors),
    }
}

fn check_not_const(sig: &syn::Signature, errors: &mut Errors) {
    if let Some(c) = &sig.constness {
        errors.error(
            c.span,
            format!(
                "`#[resilient]` cannot apply to a `const fn`: retries, waits and breakers happen at run time; remove `const` from `{}`",
                sig.ident
            ),
        );
    }
}

fn check_attempts_keys(args: &Args, errors: &mut Errors) {
    for (key, meta) in [
        ("max_attempts", &args.max_attempts),
        ("attempts", &args.attempts),
    ] {
        let Some(meta) = meta else { continue };
        let fix = match meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(n),
                    ..
                }) => match n.base10_parse::<u32>() {
                    Ok(n) if n > 0 => format!("write `retries = {}`", n - 1),
                    _ => "write `retries = N`".to_owned(),
                },
                _ => "write `retries = N`".to_owned(),
            },
            _ => "write `retries = N`".to_owned(),
        };
        errors.error(
            meta.path().span(),
            format!(
                "`{key}` is not a key of `#[resilient]`: `retries` counts the extra attempts after the first; {fix}"
            ),
        );
    }
}

fn check_return_type(sig: &syn::Signature, errors: &mut Errors) -> Option<syn::Type> {
    match &sig.output {
        syn::ReturnType::Type(_, ty) if returns_future(ty) => {
            check_future_return(sig, ty, errors);
            None
        }
        syn::ReturnType::Type(_, ty) => {
            if let Some(what) = surely_not_result(ty) {
                errors.spanned(
                    ty,
                    format!(
                        "`#[resilient]` needs a fn that returns `Result<T, E>`, but `{}` returns {what}; return `Result<T, E>` where `E` derives `ConnectorError`",
                        sig.ident
                    ),
                );
                return None;
            }
            Some((**ty).clone())
        }
        syn::ReturnType::Default => {
            errors.error(
                sig.ident.span(),
                format!(
                    "`{}` returns `()`; `#[resilient]` needs a fn returning `Result<T, E>` whose error type classifies, e.g. `-> Result<(), MyError>`",
                    sig.ident
                ),
            );
            None
        }
    }
}

/// `impl Future<Output = ...>`: an async fn written by hand.
fn returns_future(ty: &syn::Type) -> bool {
    let syn::Type::ImplTrait(t) = ty else {
        return false;
    };
    t.bounds.iter().any(|b| {
        matches!(b, syn::TypeParamBound::Trait(t)
            if t.path.segments.last().is_some_and(|s| s.ident == "Future"))
    })
}

/// A fn that returns `impl Future` is an async fn written by hand: the attribute drives the
/// body's `Result` itself, so the fn is written `async` with the future's output as its return
/// type.
fn check_future_return(sig: &syn::Signature, ty: &syn::Type, errors: &mut Errors) {
    let output = match ty {
        syn::Type::ImplTrait(t) => t.bounds.iter().find_map(|b| match b {
            syn::TypeParamBound::Trait(t) => match &t.path.segments.last()?.arguments {
                syn::PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                    syn::GenericArgument::AssocType(at) if at.ident == "Output" => Some(
                        at.ty
                            .to_token_stream()
                            .to_string()
                            .replace(" <", "<")
                            .replace("< ", "<")
                            .replace(" >", ">")
                            .replace(" ,", ",")
                            .replace(" :: ", "::"),
                    ),
                    _ => None,
                }),
                _ => None,
            },
            _ => None,
        }),
        _ => None,
    };
    let output = output.unwrap_or_else(|| "Result<T, E>".to_owned());
    errors.spanned(
        ty,
        format!(
            "`{}` returns a future it builds by hand; `#[resilient]` makes each attempt's future itself: write `async fn {}(..) -> {output}` with the body as one attempt",
            sig.ident, sig.ident
        ),
    );
}

/// Return types that cannot be a `Result` whatever the aliases in scope. Anything else goes to
/// the compiler through the runtime's `ReturnType` trait, which sees through aliases.
fn surely_not_result(ty: &syn::Type) -> Option<String> {
    const NOT_RESULT: [&str; 19] = [
        "Option", "Vec", "String", "Box", "bool", "char", "str", "u8", "u16", "u32", "u64", "u128",
        "usize", "i8", "i16", "i32", "i64", "i128", "isize",
    ];
    match ty {
        syn::Type::Paren(p) => surely_not_result(&p.elem),
        syn::Type::Group(g) => surely_not_result(&g.elem),
        syn::Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            let name = last.ident.to_string();
            NOT_RESULT
                .contains(&name.as_str())
                .then(|| format!("`{}`", ty.to_token_stream().to_string().replace(' ', "")))
        }
        syn::Type::Path(_) | syn::Type::Macro(_) | syn::Type::Verbatim(_) => None,
        syn::Type::ImplTrait(_) => Some("an `impl Trait`".to_owned()),
        syn::Type::Tuple(t) if t.elems.is_empty() => Some("`()`".to_owned()),
        _ => Some(format!(
            "`{}`",
            ty.to_token_stream().to_string().replace(' ', "")
        )),
    }
}

fn check_retries(args: &Args, errors: &mut Errors) -> u32 {
    let idempotent = args.idempotent.is_present();
    let keyed = args.idempotency_key.is_some();
    let Some(lit) = &args.retries else {
        return if idempotent || keyed {
            defaults::RETRIES
        } else {
            0
        };
    };
    let Ok(n) = lit.base10_parse::<u32>() else {
        errors.error(
            lit.span(),
            format!("`retries` must be a whole number from 0 to {MAX_RETRIES}"),
        );
        return 0;
    };
    if let Err(v) = policy::check_retries(n) {
        errors.error(lit.span(), v);
    }
    if let Err(v) = policy::check_retries_are_safe(n, idempotent, keyed) {
        errors.error(lit.span(), v);
    }
    n.min(MAX_RETRIES)
}

fn check_backoff(args: &Args, errors: &mut Errors) -> Schedule {
    let mut backoff = Schedule::new();
    let raw = args.backoff.as_ref();
    let base_lit = raw.and_then(|b| b.base.as_ref());
    let max_lit = raw.and_then(|b| b.max.as_ref());
    let base = base_lit.and_then(|lit| errors.handle(duration::parse("base", lit)));
    let max = max_lit.and_then(|lit| errors.handle(duration::parse("max", lit)));
    if let Some(base) = base {
        backoff.base = base;
    }
    if let Some(max) = max {
        backoff.max = max;
    }
    if let Err(v) = policy::check_backoff_order(backoff.base, backoff.max) {
        // At `max` when it was written; else at `base`, which alone overshot the default `max`.
        let (span, v) = match (max_lit, base_lit) {
            (Some(lit), _) => (lit.span(), v),
            (None, Some(lit)) => (lit.span(), v.with_fix("set `max` as well, or lower `base`")),
            (None, None) => (Span::call_site(), v.with_fix("lower `base`")),
        };
        errors.error(span, v);
    }
    if let Some(lit) = raw.and_then(|b| b.factor.as_ref())
        && let Some(factor) = check_factor(lit, errors)
    {
        backoff.factor = factor;
    }
    if let Some(jitter) = check_jitter(args, raw, errors) {
        backoff.jitter = jitter;
    }
    backoff
}

fn check_factor(lit: &syn::Lit, errors: &mut Errors) -> Option<f64> {
    let parsed = match lit {
        syn::Lit::Float(f) => f.base10_parse::<f64>().ok(),
        syn::Lit::Int(i) => i.base10_parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(f) if f.is_finite() => match policy::check_backoff_factor(f) {
            Ok(()) => Some(f),
            Err(v) => {
                errors.error(lit.span(), v);
                None
            }
        },
        // Not a number literal, or one too large for an `f64`.
        _ => {
            errors.error(
                lit.span(),
                "backoff `factor` must be a number of at least 1, e.g. `factor = 2` or `factor = 1.5`",
            );
            None
        }
    }
}

fn check_jitter(args: &Args, raw: Option<&BackoffArgs>, errors: &mut Errors) -> Option<Jitter> {
    let nested = raw.and_then(|b| b.jitter.as_ref());
    let lit = match (nested, &args.jitter) {
        (Some(_), Some(top)) => {
            errors.error(
                top.span(),
                "`jitter` is set twice, inside `backoff(...)` and beside it; keep one",
            );
            return None;
        }
        (Some(lit), None) | (None, Some(lit)) => lit,
        (None, None) => return None,
    };
    let value = lit.value();
    match Jitter::from_name(&value) {
        Ok(jitter) => Some(jitter),
        Err(v) => {
            errors.error(lit.span(), v.with_fix(suggestion(&value, &Jitter::NAMES)));
            None
        }
    }
}

/// A key that needs an async fn (`timeout`, `deadline`: a blocking call cannot be interrupted)
/// is an error on a plain fn, at the key.
fn check_async_only(
    args: &Args,
    lit: &Option<syn::LitStr>,
    key: &str,
    sig: &syn::Signature,
    errors: &mut Errors,
) -> Option<Duration> {
    let lit = lit.as_ref()?;
    let operation = sig.ident.to_string();
    if let Err(v) = policy::check_needs_async(key, &operation, sig.asyncness.is_some()) {
        errors.error(args.key_span(key).unwrap_or_else(|| lit.span()), v);
        // Still check the literal itself, so every mistake shows in one build.
        let _ = errors.handle(duration::parse(key, lit));
        return None;
    }
    errors.handle(duration::parse(key, lit))
}

/// A per-attempt `timeout` longer than the `deadline` could never run out: the error is at the
/// `timeout`, the value to change.
fn check_timeout_within_deadline(
    args: &Args,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    errors: &mut Errors,
) {
    let (Some(timeout), Some(deadline), Some(lit)) = (timeout, deadline, &args.timeout) else {
        return;
    };
    if let Err(v) = policy::check_timeout_within_deadline(timeout, deadline) {
        errors.error(lit.span(), v.written_as(&lit.value()));
    }
}

fn check_deadline_fits(
    args: &Args,
    retries: u32,
    backoff: &Schedule,
    timeout: Option<Duration>,
    deadline: Option<Duration>,
    errors: &mut Errors,
) {
    let (Some(deadline), Some(lit)) = (deadline, &args.deadline) else {
        return;
    };
    // A `timeout` longer than the deadline is one mistake, reported at the `timeout` alone.
    if timeout.is_some_and(|t| t > deadline) {
        return;
    }
    if let Err(v) = policy::check_deadline_fits(deadline, retries, backoff, timeout) {
        errors.error(lit.span(), v.written_as(&lit.value()));
    }
}

fn check_name(lit: &Option<syn::LitStr>, key: &str, errors: &mut Errors) -> Option<String> {
    let lit = lit.as_ref()?;
    let name = lit.value();
    if let Err(v) = policy::check_name(key, &name) {
        errors.error(lit.span(), v);
        return None;
    }
    Some(name)
}

/// A key that takes a string literal: its literal, or an error at the value that says what to
/// write (darling's own says only the type it found).
fn string(
    value: &Option<Verbatim>,
    key: &str,
    example: &str,
    errors: &mut Errors,
) -> Option<syn::LitStr> {
    match &value.as_ref()?.0 {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Some(lit.clone()),
        other => {
            errors.spanned(
                other,
                format!("`{key}` takes a string literal, e.g. `{key} = \"{example}\"`"),
            );
            None
        }
    }
}

/// `name = "..."` names the site in configuration tables (`[sites."<name>"]`), reports and the
/// startup check: it must say something, and say it without padding (`[sites." a"]` and
/// `[sites."a"]` are two tables).
fn check_site_name(args: &Args, errors: &mut Errors) -> Option<String> {
    let lit = string(&args.name, "name", "graph::users::list", errors)?;
    let lit = &lit;
    let name = lit.value();
    if name.trim().is_empty() {
        errors.error(
            lit.span(),
            "`name` needs a non-empty site name, e.g. `name = \"graph::users::list\"`; it names the site in `[sites.\"<name>\"]` tables and reports, or remove it for `<module path>::<fn>`",
        );
        return None;
    }
    if name.trim() != name {
        errors.error(
            lit.span(),
            format!(
                "`name = \"{name}\"` starts or ends with whitespace, which a `[sites.\"<name>\"]` table would have to repeat; write `name = \"{}\"`",
                name.trim()
            ),
        );
        return None;
    }
    Some(name)
}

/// `connector = "..."` labels the site's metrics (`connector="..."`), in place of the crate's
/// name: a label that says nothing, or says it padded, would split the connector's series.
fn check_connector(args: &Args, errors: &mut Errors) -> Option<String> {
    let lit = string(&args.connector, "connector", "graph", errors)?;
    let name = lit.value();
    if name.trim().is_empty() {
        errors.error(
            lit.span(),
            "`connector` needs a non-empty name, e.g. `connector = \"graph\"`; it is the `connector` label of the site's metrics, or remove it for the crate's name",
        );
        return None;
    }
    if name.trim() != name {
        errors.error(
            lit.span(),
            format!(
                "`connector = \"{name}\"` starts or ends with whitespace, which would make a label of its own; write `connector = \"{}\"`",
                name.trim()
            ),
        );
        return None;
    }
    Some(name)
}

fn check_breaker_key(args: &Args, errors: &mut Errors) {
    if let (Some(key), None) = (&args.breaker_key, &args.breaker) {
        errors.spanned(
            &key.0,
            "`breaker_key` picks one breaker per key within a named breaker; add `breaker = \"name\"`",
        );
    }
}

fn check_sensitive_key(args: &Args, errors: &mut Errors) {
    if args.sensitive_key.is_present() && args.breaker_key.is_none() {
        errors.error(
            args.sensitive_key.span(),
            "`sensitive_key` hides the keys of `breaker_key` in logs, events, health and metrics, and this site has none; add `breaker_key = ...` or remove `sensitive_key`",
        );
    }
}

fn check_variant_list(
    list: &Option<syn::ExprArray>,
    key: &str,
    errors: &mut Errors,
) -> Vec<syn::Path> {
    let Some(list) = list else { return Vec::new() };
    let mut paths = Vec::new();
    for elem in &list.elems {
        match elem {
            syn::Expr::Path(p) if p.qself.is_none() => paths.push(p.path.clone()),
            other => errors.spanned(
                other,
                format!(
                    "`{key}` lists error variants by path, e.g. `{key} = [GraphError::Throttled]`"
                ),
            ),
        }
    }
    paths
}

fn check_overrides_disjoint(retry_on: &[syn::Path], abort_on: &[syn::Path], errors: &mut Errors) {
    let key = |p: &syn::Path| p.to_token_stream().to_string();
    for abort in abort_on {
        if retry_on.iter().any(|r| key(r) == key(abort)) {
            errors.spanned(
                abort,
                format!(
                    "`{}` is in both `retry_on` and `abort_on`; keep it in one of them",
                    key(abort).replace(' ', "")
                ),
            );
        }
    }
}

/// `retry_on = []` says nothing, and a variant listed twice in one list is a slip (the second was
/// likely meant to be another variant).
fn check_lists_say_something(args: &Args, errors: &mut Errors) {
    for (key, list) in [("retry_on", &args.retry_on), ("abort_on", &args.abort_on)] {
        let Some(list) = list else { continue };
        if list.elems.is_empty() {
            errors.spanned(
                list,
                format!("`{key} = []` lists no variant; remove it, or name the variants, e.g. `{key} = [GraphError::Conflict]`"),
            );
            continue;
        }
        let mut seen: Vec<String> = Vec::new();
        for elem in &list.elems {
            let text = elem.to_token_stream().to_string().replace(' ', "");
            if seen.contains(&text) {
                errors.spanned(
                    elem,
                    format!("`{text}` is listed twice in `{key}`; remove the repeated one"),
                );
            } else {
                seen.push(text);
            }
        }
    }
}

/// `backoff`, `jitter`, `budget`, `retry_on` and `abort_on` shape retries: at a site that never
/// retries (and that a configuration cannot give retries) they do nothing. `backoff` also spaces
/// the waits for a `bulkhead` slot, and `abort_on` also stops a `refresh`.
fn check_used_by_retries(args: &Args, retries: u32, errors: &mut Errors) {
    let safe = args.idempotent.is_present() || args.idempotency_key.is_some();
    let backoff_span = args.backoff.as_ref().map(|b| {
        [&b.base, &b.max, &b.jitter]
            .into_iter()
            .flatten()
            .map(syn::LitStr::span)
            .chain(b.factor.as_ref().map(syn::Lit::span))
            .next()
    });
    let keys = [
        (
            "backoff",
            backoff_span.map(|s| s.unwrap_or_else(Span::call_site)),
            args.bulkhead.is_none(),
        ),
        (
            "jitter",
            args.jitter.as_ref().map(syn::LitStr::span),
            args.bulkhead.is_none(),
        ),
        // Only a budget that names one: another value has an error of its own.
        (
            "budget",
            match args.budget.as_ref().map(|b| &b.0) {
                Some(syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(lit),
                    ..
                })) => Some(lit.span()),
                _ => None,
            },
            true,
        ),
        ("retry_on", args.retry_on.as_ref().map(|l| l.span()), true),
        // `abort_on` also stops a credential refresh.
        (
            "abort_on",
            args.abort_on.as_ref().map(|l| l.span()),
            args.refresh.is_none(),
        ),
    ];
    for (key, span, applies) in keys {
        let Some(span) = span else { continue };
        if !applies {
            continue;
        }
        if let Err(v) = policy::check_used_by_retries(key, retries, safe) {
            let v = if retries == 0 && args.retries.is_some() {
                v.with_fix(format!(
                    "remove `{key}`, or mark the site `idempotent` and raise `retries`"
                ))
            } else {
                v
            };
            errors.error(span, v);
        }
    }
}

/// A `breaker_key` or `idempotency_key` written as a literal is the same for every call: one
/// breaker for every tenant, or one idempotency key that makes a server answer every create
/// with the first one's result.
fn check_keys_vary(args: &Args, errors: &mut Errors) {
    let literal = |v: &Option<Verbatim>| match v.as_ref().map(|v| &v.0) {
        Some(syn::Expr::Lit(lit)) => Some(lit.clone()),
        _ => None,
    };
    if let Some(lit) = literal(&args.breaker_key) {
        errors.spanned(
            &lit,
            "`breaker_key` is a literal, so every call gets the same breaker; key by what varies per call, e.g. `breaker_key = self.tenant.as_str()`, or remove it and keep `breaker = \"...\"` alone",
        );
    }
    if let Some(lit) = literal(&args.idempotency_key) {
        errors.spanned(
            &lit,
            "`idempotency_key` is a literal, so every call sends the same key and the server answers each with the first call's result; key by the request, e.g. `idempotency_key = request.id`",
        );
    }
}

fn check_receiver(
    sig: &syn::Signature,
    args: &Args,
    retries: u32,
    repeats: bool,
    errors: &mut Errors,
) -> Receiver {
    let Some(receiver) = sig.receiver() else {
        return Receiver::None;
    };
    let kind = match &receiver.kind {
        syn::ReceiverKind::Reference(_, _, None) => Receiver::Shared,
        syn::ReceiverKind::Reference(_, _, Some(_)) => Receiver::Unique,
        syn::ReceiverKind::Typed(_, ty) if is_self_type(ty) => Receiver::Value,
        syn::ReceiverKind::Typed(..) => Receiver::Typed,
        _ => Receiver::Value,
    };
    if kind == Receiver::Value && repeats {
        let why = if retries > 0 {
            format!("`retries = {retries}` runs the body more than once")
        } else if args.refresh.is_some() {
            "`refresh` runs the body again after refreshing credentials".to_owned()
        } else if args.idempotent.is_present() {
            "`idempotent` lets a configuration (`[sites]`, `with_policy`) give it retries, which run the body more than once".to_owned()
        } else if args.idempotency_key.is_some() {
            "`idempotency_key` lets a configuration (`[sites]`, `with_policy`) give it retries, which run the body more than once".to_owned()
        } else {
            "the body runs more than once".to_owned()
        };
        errors.error(
            receiver.self_token.span,
            format!(
                "`{}` takes `self` by value, but {why}; take `&self`, `&mut self` or `self: Arc<Self>`",
                sig.ident
            ),
        );
    }
    kind
}

/// `fallback = path` and `fallback_on = [..]`: the fallback's arguments (each needs a name to
/// be passed by), the variants it takes, and the signature it must have.
fn check_fallback(
    args: &Args,
    sig: &syn::Signature,
    receiver: Receiver,
    errors: &mut Errors,
) -> Option<Fallback> {
    let on = args
        .fallback_on
        .as_ref()
        .map(|k| check_variant_list(&Some(k.value.clone()), "fallback_on", errors))
        .unwrap_or_default();
    let Some(path) = &args.fallback else {
        if let Some(k) = &args.fallback_on {
            errors.error(
                k.key,
                "`fallback_on` picks the errors that reach the fallback, and this site has none; add `fallback = path` or remove `fallback_on`",
            );
        }
        return None;
    };
    let name = path
        .segments
        .last()
        .map_or_else(|| "fallback".to_owned(), |s| s.ident.to_string());
    let mut params = Vec::new();
    match (receiver, sig.receiver()) {
        (Receiver::Value, Some(r)) => errors.error(
            r.self_token.span,
            format!(
                "`{}` takes `self` by value, which its body consumes, but `fallback = {name}` gets `&self` after the last attempt; take `&self`, `&mut self` or `self: Arc<Self>`",
                sig.ident
            ),
        ),
        (Receiver::Unique, _) => params.push("&mut self".to_owned()),
        (Receiver::Shared | Receiver::Typed, _) => params.push("&self".to_owned()),
        _ => {}
    }
    let mut passed = Vec::new();
    for arg in &sig.inputs {
        let syn::FnArg::Typed(pat_type) = arg else {
            continue;
        };
        let (is_ref, shown) = match &*pat_type.ty {
            syn::Type::Reference(r) => {
                let lifetime = r
                    .lifetime
                    .as_ref()
                    .map(|l| format!("{l} "))
                    .unwrap_or_default();
                (true, format!("&{lifetime}{}", render(&r.elem)))
            }
            ty => (false, format!("&{}", render(ty))),
        };
        match &*pat_type.pat {
            syn::Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                let ident = p.ident.clone();
                params.push(format!(
                    "{}: {shown}",
                    ident.to_string().trim_start_matches("r#")
                ));
                passed.push(FallbackArg { ident, is_ref });
            }
            other => errors.spanned(
                other,
                format!(
                    "`fallback = {name}` gets every argument by reference, so each needs a name: write `name: {}` and take it apart in the body",
                    render(&pat_type.ty)
                ),
            ),
        }
    }
    let (ret, error_type) = result_types(sig);
    params.push(format!("error: {}", error_type.as_deref().unwrap_or("E")));
    let expected = format!("fn {name}({}) -> {ret}", params.join(", "));
    Some(Fallback {
        path: path.clone(),
        on,
        args: passed,
        expected,
        error_type,
    })
}

/// The declared return type as written, and its error type when it spells `Result<T, E>`.
fn result_types(sig: &syn::Signature) -> (String, Option<String>) {
    let syn::ReturnType::Type(_, ty) = &sig.output else {
        return ("()".to_owned(), None);
    };
    let err = match &**ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .and_then(|last| match &last.arguments {
                syn::PathArguments::AngleBracketed(a) if last.ident == "Result" => {
                    let mut types = a.args.iter().filter_map(|g| match g {
                        syn::GenericArgument::Type(t) => Some(t),
                        _ => None,
                    });
                    match (types.next(), types.next(), types.next()) {
                        (Some(_), Some(e), None) => Some(render(e)),
                        _ => None,
                    }
                }
                _ => None,
            }),
        _ => None,
    };
    (render(ty), err)
}

/// A type as a user writes it (`Vec<String>`, `&'a str`), not as tokens print (`Vec < String >`).
fn render(ty: &impl ToTokens) -> String {
    let mut out = ty.to_token_stream().to_string();
    for (from, to) in [
        (" < ", "<"),
        ("< ", "<"),
        (" <", "<"),
        (" >", ">"),
        (" :: ", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// `retry_if_ok` makes another attempt after an `Ok`: a retry, which needs the operation to be
/// safe to repeat, as `retries` does.
fn check_retry_if_ok(args: &Args, errors: &mut Errors) {
    let Some(k) = &args.retry_if_ok else { return };
    if !args.idempotent.is_present() && args.idempotency_key.is_none() {
        errors.error(
            k.key,
            "`retry_if_ok` makes another attempt after an `Ok`, which runs the operation again, so it must be safe to repeat; add `idempotent`, or `idempotency_key = <expr>` for a create",
        );
    }
}

fn is_self_type(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self"))
}

/// The rebinds that give every attempt fresh arguments: owned arguments the body mentions are
/// cloned, `&mut T` arguments reborrowed, shared references left alone (they are `Copy`).
fn rebinds(item: &syn::ItemFn) -> Vec<Rebind> {
    let body = item.block.to_token_stream();
    let mut out = Vec::new();
    for arg in &item.sig.inputs {
        let syn::FnArg::Typed(pat_type) = arg else {
            continue;
        };
        match (&*pat_type.pat, &*pat_type.ty) {
            (_, syn::Type::Reference(r)) if r.mutability.is_none() => {}
            (syn::Pat::Ident(p), syn::Type::Reference(_))
                if p.by_ref.is_none() && p.subpat.is_none() =>
            {
                out.push(Rebind::Reborrow {
                    ident: p.ident.clone(),
                    mutability: p.mutability,
                });
            }
            (_, syn::Type::Reference(_)) => {}
            (pat, _) => {
                for (ident, mutability) in bindings(pat) {
                    if mentions(&body, &ident) {
                        out.push(Rebind::Clone {
                            ident,
                            mutability,
                            span: pat_type.ty.span(),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The by-value bindings of a pattern.
fn bindings(pat: &syn::Pat) -> Vec<(syn::Ident, Option<syn::Token![mut]>)> {
    let mut out = Vec::new();
    collect_bindings(pat, &mut out);
    out
}

fn collect_bindings(pat: &syn::Pat, out: &mut Vec<(syn::Ident, Option<syn::Token![mut]>)>) {
    match pat {
        syn::Pat::Ident(p) => {
            if p.by_ref.is_none() {
                out.push((p.ident.clone(), p.mutability));
            }
            if let Some((_, sub)) = &p.subpat {
                collect_bindings(sub, out);
            }
        }
        syn::Pat::Tuple(t) => t.elems.iter().for_each(|p| collect_bindings(p, out)),
        syn::Pat::TupleStruct(t) => t.elems.iter().for_each(|p| collect_bindings(p, out)),
        syn::Pat::Struct(s) => s.fields.iter().for_each(|f| collect_bindings(&f.pat, out)),
        syn::Pat::Slice(s) => s.elems.iter().for_each(|p| collect_bindings(p, out)),
        syn::Pat::Paren(p) => collect_bindings(&p.pat, out),
        syn::Pat::Type(t) => collect_bindings(&t.pat, out),
        // `&pat` binds through a reference: nothing owned to clone.
        _ => {}
    }
}

/// Whether `ident` occurs anywhere in `tokens`, macro arguments included. Over-approximates (a
/// field or a shadowing local of the same name counts), which at worst clones a value once more.
fn mentions(tokens: &TokenStream, ident: &syn::Ident) -> bool {
    tokens.clone().into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == *ident,
        TokenTree::Group(g) => mentions(&g.stream(), ident),
        TokenTree::Literal(l) => captured_by_format(&l.to_string(), &ident.to_string()),
        TokenTree::Punct(_) => false,
    })
}

/// Whether a string literal, as a format string, captures `name` from the scope: `{name}`,
/// `{name:?}`, or a `name$` width or precision.
fn captured_by_format(literal: &str, name: &str) -> bool {
    if !literal.starts_with(['"', 'r']) {
        return false;
    }
    let mut rest = literal;
    while let Some(i) = rest.find(['{', '}']) {
        let (brace, after) = rest[i..].split_at(1);
        if after.starts_with(brace) {
            // `{{` or `}}`: a brace, not a placeholder.
            rest = &after[1..];
            continue;
        }
        rest = after;
        if brace == "}" {
            continue;
        }
        let end = after.find('}').unwrap_or(after.len());
        let (arg, spec) = after[..end].split_once(':').unwrap_or((&after[..end], ""));
        let counts = spec.split('$').rev().skip(1).any(|piece| {
            let start = piece
                .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(0, |j| j + 1);
            &piece[start..] == name
        });
        if arg.trim() == name || counts {
            return true;
        }
        rest = &after[end..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resilient::parse;
    use quote::quote;

    fn run(args: TokenStream, item: TokenStream) -> Result<Config, Vec<String>> {
        let args = parse::args(args).map_err(|e| vec![e.to_string()])?;
        let item: syn::ItemFn = syn::parse2(item).map_err(|e| vec![e.to_string()])?;
        validate(args, &item, Errors::new()).map_err(|e| e.messages())
    }

    fn errors(args: TokenStream, item: TokenStream) -> Vec<String> {
        run(args, item).err().unwrap_or_default()
    }

    #[test]
    fn bare_attribute_is_legal_and_does_not_retry() {
        let config = run(
            quote!(),
            quote!(
                fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .ok();
        assert_eq!(config.map(|c| c.retries), Some(0));
    }

    #[test]
    fn idempotent_defaults_to_three_retries() {
        let config = run(
            quote!(idempotent),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .ok();
        assert_eq!(config.map(|c| c.retries), Some(defaults::RETRIES));
    }

    #[test]
    fn a_connector_is_a_non_empty_unpadded_string() {
        let item = quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        );
        let config = run(quote!(connector = "graph"), item.clone());
        assert_eq!(config.ok().and_then(|c| c.connector), Some("graph".into()));
        for (args, says) in [
            (
                quote!(connector = " "),
                "`connector` needs a non-empty name",
            ),
            (
                quote!(connector = " graph"),
                "write `connector = \"graph\"`",
            ),
            (
                quote!(connector = graph),
                "`connector` takes a string literal",
            ),
        ] {
            let errs = errors(args, item.clone());
            assert_eq!(errs.len(), 1, "{errs:#?}");
            assert!(errs[0].contains(says), "{errs:#?}");
        }
    }

    #[test]
    fn sensitive_key_needs_a_breaker_key() {
        let item = quote!(
            async fn f(tenant: &str) -> Result<(), E> {
                Ok(())
            }
        );
        let errs = errors(quote!(breaker = "okta", sensitive_key), item.clone());
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("add `breaker_key = ...` or remove `sensitive_key`")),
            "{errs:#?}"
        );
        let config = run(
            quote!(breaker = "okta", breaker_key = tenant, sensitive_key),
            item,
        );
        assert_eq!(config.ok().map(|c| c.sensitive_key), Some(true));
    }

    #[test]
    fn collects_every_error_in_one_pass() {
        let errs = errors(
            quote!(
                retries = 25,
                timeout = "0s",
                backoff(factor = 0.5, jitter = "ful")
            ),
            quote!(
                fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(errs.len(), 6, "{errs:#?}");
        assert!(errs.iter().any(|e| e.contains("limit of 20")));
        assert!(errs.iter().any(|e| e.contains("`idempotent`")));
        assert!(errs.iter().any(|e| e.contains("needs an async fn")));
        assert!(errs.iter().any(|e| e.contains("longer than zero")));
        assert!(errs.iter().any(|e| e.contains("shrink")));
        assert!(errs.iter().any(|e| e.contains("did you mean `full`")));
    }

    #[test]
    fn deadline_must_fit_the_worst_case_schedule() {
        // 1s, 2s, 4s with jitter off, plus 4 attempts of 1s: 11s.
        let errs = errors(
            quote!(
                retries = 3,
                idempotent,
                jitter = "none",
                timeout = "1s",
                deadline = "10s"
            ),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs.iter().any(|e| e.contains("10s") && e.contains("11s")),
            "{errs:#?}"
        );
        assert!(
            run(
                quote!(
                    retries = 3,
                    idempotent,
                    jitter = "none",
                    timeout = "1s",
                    deadline = "11s"
                ),
                quote!(
                    async fn f() -> Result<(), E> {
                        Ok(())
                    }
                ),
            )
            .is_ok()
        );
    }

    #[test]
    fn a_timeout_longer_than_the_deadline_is_one_error_at_the_timeout() {
        let errs = errors(
            quote!(timeout = "2m", deadline = "1m"),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("`timeout = \"2m\"` is longer than `deadline = \"1m\"`")),
            "{errs:#?}"
        );
    }

    #[test]
    fn the_schedule_is_the_policy_crates() {
        let config = run(
            quote!(
                retries = 2,
                idempotent,
                backoff(
                    base = "250ms",
                    max = "4s",
                    factor = 3,
                    jitter = "decorrelated"
                )
            ),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        let expected = Schedule::new()
            .with_base(Duration::from_millis(250))
            .with_max(Duration::from_secs(4))
            .with_factor(3.0)
            .with_jitter(Jitter::Decorrelated);
        assert_eq!(config.ok().map(|c| c.backoff), Some(expected));
    }

    #[test]
    fn the_same_variant_cannot_be_retried_and_aborted() {
        let errs = errors(
            quote!(
                retries = 1,
                idempotent,
                retry_on = [E::A, E::B],
                abort_on = [E::B]
            ),
            quote!(
                fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(errs.len(), 1);
        assert!(errs.iter().any(|e| e.contains("`E::B` is in both")));
    }

    #[test]
    fn by_value_self_cannot_be_retried() {
        let errs = errors(
            quote!(retries = 2, idempotent),
            quote!(
                fn f(self) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            errs.iter().any(|e| e.contains("takes `self` by value")),
            "{errs:#?}"
        );
        assert!(
            run(
                quote!(retries = 2, idempotent),
                quote!(
                    fn f(self: Arc<Self>) -> Result<(), E> {
                        Ok(())
                    }
                )
            )
            .is_ok()
        );
    }

    #[test]
    fn a_site_name_must_say_something_without_padding() {
        let item = quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        );
        let errs = errors(quote!(name = " "), item.clone());
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0].starts_with("`name` needs a non-empty site name"),
            "{errs:#?}"
        );
        let errs = errors(quote!(name = "graph::list "), item.clone());
        assert!(
            errs[0].contains("write `name = \"graph::list\"`"),
            "{errs:#?}"
        );
        let config = run(
            quote!(name = "graph::list", idempotent, budget = "reads"),
            item,
        );
        let config = config.ok();
        assert_eq!(
            config.as_ref().and_then(|c| c.name.as_deref()),
            Some("graph::list")
        );
        assert_eq!(config.and_then(|c| c.budget), Some("reads".to_owned()));
    }

    #[test]
    fn a_name_or_budget_that_is_not_a_string_says_what_to_write() {
        let item = quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        );
        assert_eq!(
            errors(quote!(name = graph::list, budget = 3), item),
            [
                "`name` takes a string literal, e.g. `name = \"graph::users::list\"`",
                "`budget` takes a string literal, e.g. `budget = \"graph\"`"
            ]
        );
    }

    #[test]
    fn a_budget_needs_a_name() {
        let errs = errors(
            quote!(idempotent, budget = ""),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(
            errs,
            [
                "`budget` needs a non-empty name, e.g. `budget = \"graph\"`; sites with the same name share it"
            ]
        );
    }

    #[test]
    fn by_value_self_cannot_be_marked_safe_to_repeat() {
        // Configuration may give an idempotent site retries, which run the body again.
        let errs = errors(
            quote!(retries = 0, idempotent),
            quote!(
                fn f(self) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("`idempotent` lets a configuration")),
            "{errs:#?}"
        );
        assert!(
            run(
                quote!(retries = 0),
                quote!(
                    fn f(self) -> Result<(), E> {
                        Ok(())
                    }
                )
            )
            .is_ok()
        );
    }

    #[test]
    fn explains_max_attempts() {
        let errs = errors(
            quote!(max_attempts = 4),
            quote!(
                fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            errs.iter().any(|e| e.contains("write `retries = 3`")),
            "{errs:#?}"
        );
    }

    #[test]
    fn the_fallback_signature_is_the_fns_own() {
        let config = run(
            quote!(
                fallback = Self::cached,
                fallback_on = [GraphError::Unavailable]
            ),
            quote!(
                async fn device(
                    &self,
                    id: u64,
                    tenant: &'a str,
                    out: &mut Vec<Device>,
                ) -> Result<Option<Device>, GraphError> {
                    Ok(None)
                }
            ),
        );
        let fallback = config.ok().and_then(|c| c.fallback);
        assert_eq!(
            fallback.as_ref().map(|f| f.expected.as_str()),
            Some(
                "fn cached(&self, id: &u64, tenant: &'a str, out: &Vec<Device>, error: GraphError) -> Result<Option<Device>, GraphError>"
            )
        );
        assert_eq!(fallback.map(|f| f.on.len()), Some(1));
        // Through an alias, the error type is `E`.
        let config = run(
            quote!(fallback = cached),
            quote!(
                fn read(&mut self) -> ApiResult<u32> {
                    Ok(1)
                }
            ),
        );
        let fallback = config.ok().and_then(|c| c.fallback);
        assert_eq!(
            fallback.as_ref().map(|f| f.expected.as_str()),
            Some("fn cached(&mut self, error: E) -> ApiResult<u32>")
        );
        assert!(fallback.is_some_and(|f| f.error_type.is_none()));
    }

    #[test]
    fn retry_if_ok_is_a_retry() {
        let item = quote!(
            async fn f() -> Result<u16, E> {
                Ok(202)
            }
        );
        let errs = errors(quote!(retry_if_ok = accepted), item.clone());
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(errs[0].contains("add `idempotent`"), "{errs:#?}");
        assert!(run(quote!(idempotent, retry_if_ok = accepted), item.clone()).is_ok());
        assert!(
            run(
                quote!(idempotency_key = request_id(), retry_if_ok = accepted),
                item
            )
            .is_ok()
        );
    }

    /// The rebinds of `item` at a retrying site, as `clone x` or `reborrow x`.
    fn rebinds_of(item: TokenStream) -> Vec<String> {
        run(quote!(retries = 1, idempotent), item)
            .map(|c| {
                c.rebinds
                    .iter()
                    .map(|r| match r {
                        Rebind::Clone { ident, .. } => format!("clone {ident}"),
                        Rebind::Reborrow { ident, .. } => format!("reborrow {ident}"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn rebinds_owned_arguments_the_body_uses() {
        let names = rebinds_of(quote!(
            fn f(
                a: String,
                b: &str,
                c: &mut Vec<u8>,
                (d, e): (u8, u8),
                unused: String,
            ) -> Result<(), E> {
                c.push(d);
                drop((a, b, e));
                Ok(())
            }
        ));
        assert_eq!(names, ["clone a", "reborrow c", "clone d", "clone e"]);
    }

    #[test]
    fn a_format_string_that_captures_an_argument_uses_it() {
        let names = rebinds_of(quote!(
            fn f(name: String, width: usize, pad: String, unused: String) -> Result<(), E> {
                let _ = format!("{name:>width$} {pad}");
                let _ = format!("{{unused}} unused");
                Ok(())
            }
        ));
        assert_eq!(names, ["clone name", "clone width", "clone pad"]);
    }
}
