//! Expand: a finished [`Config`] and the user's fn in, the fn with a resilient body out.
//!
//! The signature, attributes, docs and visibility are kept as written; only the body changes.
//! The original body becomes one attempt, wrapped in an `async` block (or a closure for a
//! blocking fn) that the runtime's engine drives:
//!
//! ```text
//! const POLICY: Policy = ...;
//! static SITE: Site = Site::new(&POLICY);
//! struct __ResilientSite;                                      // the site, known by type
//! impl SiteDef for __ResilientSite { const POLICY = &POLICY; fn site() { &SITE } }
//! let __resilient_hooks = hooks().with_from_rejected(from_rejected::<E>)...;  // zero-sized
//! let mut call = start::<Result<T, E>, __ResilientSite, _>(__resilient_hooks);
//! loop {
//!     // the gate, the attempt, the decision and the backoff, in one future; the attempt owns
//!     // its clones of the owned arguments (moved in), so it is `Send` when they are
//!     let attempt = {
//!         let owned_arg = CloneArg::clone_arg(&owned_arg);      // per attempt
//!         async move { <fake return> <body> }      // `Owned` and `async` with `&mut self`
//!     };
//!     match <E as Engine<T>>::attempt(&mut call, attempt).await {
//!         Step::Ok(v) => return Ok(v),
//!         Step::Err(e) => return Err(e),
//!         Step::Refresh => { /* refresh(self).await, or fail */ }
//!         Step::Retry | Step::Wait(_) => {}                      // the backoff is waited out
//!     }
//! }
//! ```
//!
//! A site that never repeats (no retries, no `refresh`) runs the body once without the loop, so
//! the body may move its arguments. The engine is reached through `Engine`, named from the return
//! type and spanned on it, so that an error type that does not classify is reported once, there.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use resilience_policy::Jitter;
use syn::spanned::Spanned;

use super::validate::{Config, Fallback, Rebind, Receiver};
use crate::diag::respan;
use crate::duration;

/// The fn with its body replaced.
pub(crate) fn expand(config: &Config, mut item: syn::ItemFn) -> TokenStream {
    let body = body(config, &item.block);
    strip_rebound_mut(config, &mut item.sig);
    item.block = Box::new(syn::Block {
        brace_token: item.block.brace_token,
        stmts: vec![syn::Stmt::Expr(syn::Expr::Verbatim(body), None)],
    });
    item.into_token_stream()
}

/// Generated locals: invisible to the user's code (a UI test shows it).
fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

fn body(config: &Config, block: &syn::Block) -> TokenStream {
    let private = private(config);
    let ret = &config.ret;
    let site_type = Ident::new("__ResilientSite", Span::mixed_site());
    let hooks = local("__resilient_hooks");
    // Located at the return type: an error about the call's type points there.
    let call = Ident::new(
        "__resilient_call",
        Span::mixed_site().located_at(ret.span()),
    );
    let r = local("__resilient_r");
    // Everything that depends on the error type is named through the return type and spanned
    // on it, so "not a `Result`" and "does not classify" are reported once, there.
    let at_ret = respan(private.clone(), ret.span());
    let engine = quote_spanned! {ret.span()=>
        <<#ret as #at_ret::ReturnType>::Err as #at_ret::Engine<<#ret as #at_ret::ReturnType>::Ok>>
    };

    let policy = policy(config, &private);
    // Where a call holds its key's breaker until it starts: nothing at a site without a key.
    let key_slot = if config.breaker_key.is_some() {
        quote!(#private::HeldKey)
    } else {
        quote!(#private::NoKey)
    };
    let hooks_init = hooks_init(config, &private, &hooks);
    let keys = keys(config, &private, &engine, &call);
    let rebinds = rebinds(config, &private);
    let attempt = attempt(config, block, &rebinds, &moves(config, &private));
    // How the loop ends the call: a return, or, when a fallback follows, a break out of it.
    let done = syn::Lifetime::new("'__resilient_done", Span::mixed_site());
    let exit = if config.fallback.is_some() {
        quote!(break #done)
    } else {
        quote!(return)
    };
    let refresh = refresh(config, &private, &call, &exit);
    let class_checks = class_checks(config, &private);
    // The whole type at one span: an error about it is then the same error as the engine's
    // calls report, and is reported once.
    let ret_at_ret = respan(ret.to_token_stream(), ret.span());
    let make_call = quote_spanned! {ret.span()=>
        #at_ret::start::<#ret_at_ret, #site_type, _>(#hooks)
    };

    // One future per attempt: the gate, the attempt, the decision and the backoff before a
    // retry. An async fn's future awaits nothing else (but a credential refresh).
    let step = if config.is_async {
        let attempt_fn = if config.timeout.is_some() || config.deadline.is_some() {
            quote_spanned!(ret.span()=> attempt_timed)
        } else {
            // No timer to arm: the attempt's future holds none, so the fn's future stays small.
            quote_spanned!(ret.span()=> attempt)
        };
        quote_spanned!(ret.span()=> #engine::#attempt_fn(&mut #call, #attempt).await)
    } else {
        quote_spanned!(ret.span()=> #engine::attempt_blocking(&mut #call, #attempt))
    };

    // A site that may run the body again loops; one that never does runs it once, straight, so
    // that the body may move its arguments (`self` by value included).
    let drive = if config.repeats() {
        quote! {
            loop {
                match #step {
                    #private::Step::Ok(#r) => #exit #private::Ok(#r),
                    #private::Step::Err(#r) => #exit #private::Err(#r),
                    #private::Step::Refresh => { #refresh }
                    #private::Step::Retry | #private::Step::Wait(_) => {}
                }
            }
        }
    } else {
        quote_spanned! {ret.span()=>
            #engine::once(#step)
        }
    };
    // With a fallback, the call's result goes through it: the errors it takes (`fallback_on`)
    // are passed to it with the receiver and the arguments.
    let (fallback_items, drive) = match &config.fallback {
        Some(fallback) => {
            let out = local("__resilient_out");
            let e = local("__resilient_e");
            let takes = local("__resilient_fallback_on");
            let run = fallback_call(config, fallback, &private, &e);
            // Only the loop breaks out: a site that runs once has no label to leave.
            let drive = if config.repeats() {
                quote!(#done: { #drive })
            } else {
                drive
            };
            let drive = quote! {
                let #out: #ret = #drive;
                match #out {
                    #private::Err(#e) if #takes(&#e) => #run,
                    #r => #r,
                }
            };
            (fallback_traits(config, fallback, &private), drive)
        }
        None => (TokenStream::new(), drive),
    };

    quote! {
        const __RESILIENT_POLICY: #private::Policy = #policy;
        static __RESILIENT_SITE: #private::Site = #private::Site::new(&__RESILIENT_POLICY);
        // Lists the site at run time (`resilience_runtime::sites`), before its first call.
        #private::register_site!(__RESILIENT_SITE);
        // The site as a type: its policy and its state are constants where calls are driven.
        struct #site_type;
        impl #private::SiteDef for #site_type {
            const POLICY: &'static #private::Policy = &__RESILIENT_POLICY;
            type Key = #key_slot;
            #[inline(always)]
            fn site() -> &'static #private::Site {
                &__RESILIENT_SITE
            }
        }
        #fallback_items
        #hooks_init
        #class_checks
        let mut #call = #make_call;
        #keys
        #drive
    }
}

/// `::resilience_runtime::__private`, or the `crate = "..."` path's.
fn private(config: &Config) -> TokenStream {
    let krate = &config.krate;
    quote!(#krate::__private)
}

/// The `const` policy expression.
fn policy(config: &Config, private: &TokenStream) -> TokenStream {
    let operation = &config.operation;
    let mut policy = quote!(#private::Policy::new(#operation, #private::module_path!()));
    if let Some(name) = &config.name {
        policy.extend(quote!(.with_name(#name)));
    }
    if !config.is_async {
        policy.extend(quote!(.blocking()));
    }
    if config.retries > 0 {
        let retries = config.retries;
        policy.extend(quote!(.with_retries(#retries)));
    }
    // The schedule of retries (a configuration may give a site safe to repeat retries it has not
    // got), and of the waits for a bulkhead slot.
    if config.retries > 0 || config.safe_to_repeat() || config.bulkhead.is_some() {
        let b = &config.backoff;
        let base = duration::tokens(private, b.base);
        let max = duration::tokens(private, b.max);
        let factor = b.factor;
        let jitter = match b.jitter {
            Jitter::None => quote!(#private::Jitter::None),
            Jitter::Full => quote!(#private::Jitter::Full),
            Jitter::Equal => quote!(#private::Jitter::Equal),
            Jitter::Decorrelated => quote!(#private::Jitter::Decorrelated),
            Jitter::Proportional(fraction) => quote!(#private::Jitter::Proportional(#fraction)),
            // `Jitter::from_name` makes only the kinds above.
            _ => quote!(#private::Jitter::DEFAULT),
        };
        policy.extend(quote! {
            .with_backoff(
                #private::Backoff::new()
                    .with_base(#base)
                    .with_max(#max)
                    .with_factor(#factor)
                    .with_jitter(#jitter)
            )
        });
    }
    if config.idempotent {
        policy.extend(quote!(.idempotent()));
    }
    if config.idempotency_key.is_some() {
        policy.extend(quote!(.with_idempotency_key()));
    }
    if let Some(name) = &config.breaker {
        policy.extend(quote!(.with_breaker(#name)));
        if config.breaker_key.is_some() {
            policy.extend(quote!(.with_keyed_breaker()));
            if config.sensitive_key {
                policy.extend(quote!(.with_sensitive_key()));
            }
        }
    }
    if let Some(t) = config.timeout {
        let t = duration::tokens(private, t);
        policy.extend(quote!(.with_timeout(#t)));
    }
    if let Some(d) = config.deadline {
        let d = duration::tokens(private, d);
        policy.extend(quote!(.with_deadline(#d)));
    }
    if let Some(name) = &config.rate_limit {
        policy.extend(quote!(.with_rate_limit(#name)));
    }
    if let Some(name) = &config.bulkhead {
        policy.extend(quote!(.with_bulkhead(#name)));
    }
    if let Some(name) = &config.budget {
        policy.extend(quote!(.with_budget(#name)));
    }
    // The `connector` label: the attribute's, else the name of the crate the site is compiled
    // in (never its module path).
    match &config.connector {
        Some(c) => policy.extend(quote!(.with_connector(#c))),
        None => policy.extend(quote!(.with_connector(#private::env!("CARGO_CRATE_NAME")))),
    }
    policy
}

/// `let hooks = hooks()...;`: the parts of the policy that are code, as zero-sized hooks.
fn hooks_init(config: &Config, private: &TokenStream, hooks: &Ident) -> TokenStream {
    let ret = &config.ret;
    let at_ret = respan(private.clone(), ret.span());
    let ok = quote_spanned!(ret.span()=> <#ret as #at_ret::ReturnType>::Ok);
    let err = quote_spanned!(ret.span()=> <#ret as #at_ret::ReturnType>::Err);
    // Spanned on the return type, as the engine's calls are: a hook that cannot be built for the
    // error type is reported there, once.
    let mut init = quote_spanned!(ret.span()=> #at_ret::hooks());
    if config.may_reject() {
        init.extend(
            quote_spanned!(ret.span()=> .with_from_rejected(#at_ret::from_rejected::<#err>)),
        );
    }
    let mut pre = TokenStream::new();
    if !config.retry_on.is_empty() || !config.abort_on.is_empty() {
        let e = local("__resilient_e");
        let over = local("__resilient_override");
        let check = |paths: &[syn::Path], verdict: TokenStream| {
            paths
                .iter()
                .map(|p| {
                    let pattern = quote_spanned!(p.span()=> #p { .. });
                    quote! {
                        if #private::matches!(#e, #pattern) {
                            return #private::Some(#verdict);
                        }
                    }
                })
                .collect::<TokenStream>()
        };
        let aborts = check(&config.abort_on, quote!(#private::Override::Abort));
        let retries = check(&config.retry_on, quote!(#private::Override::Retry));
        pre.extend(quote! {
            #[allow(unreachable_patterns, clippy::needless_return)]
            let #over = |#e: &#err| -> #private::Option<#private::Override> {
                #aborts
                #retries
                #private::None
            };
        });
        init.extend(quote_spanned!(ret.span()=> .with_override(#over)));
    }
    if let Some(fallback) = &config.fallback {
        // The errors the fallback takes, for the engine (which counts them) and for the call to
        // it after the loop (see `fallback_call`).
        let e = local("__resilient_e");
        let takes = local("__resilient_fallback_on");
        let test = if fallback.on.is_empty() {
            quote!(true)
        } else {
            let patterns = fallback
                .on
                .iter()
                .map(|p| quote_spanned!(p.span()=> #p { .. }));
            quote!(#private::matches!(#e, #(#patterns)|*))
        };
        pre.extend(quote! {
            #[allow(unreachable_patterns, unused_variables)]
            let #takes = |#e: &#err| -> #private::bool { #test };
        });
        init.extend(quote_spanned!(ret.span()=> .with_fallback_on(#takes)));
    }
    if let Some(path) = &config.retry_if_ok {
        // A closure of the right type whatever the hook is, whose call checks the hook at its
        // path: a hook of the wrong shape is one error, on its name.
        let span = path
            .segments
            .last()
            .map_or_else(|| path.span(), |s| s.ident.span());
        let at_path = respan(private.clone(), span);
        let v = local("__resilient_v");
        let hook = local("__resilient_retry_if_ok");
        let verdict =
            quote_spanned!(span=> <_ as #at_path::RetryIfOk<#ok, _>>::verdict(&#path, #v));
        pre.extend(quote! {
            let #hook = |#v: &#ok| -> #private::RetryOk { #verdict };
        });
        init.extend(quote_spanned!(ret.span()=> .with_retry_if_ok(#hook)));
    }
    if config.refresh.is_some() {
        init.extend(quote_spanned!(ret.span()=> .with_refresh()));
    }
    quote! {
        #pre
        let #hooks = #init;
    }
}

/// The idempotency and breaker keys, evaluated once per call before the first attempt.
fn keys(config: &Config, private: &TokenStream, engine: &TokenStream, call: &Ident) -> TokenStream {
    let mut out = TokenStream::new();
    if let Some(expr) = &config.idempotency_key {
        // Spanned on the expression: a key that cannot be one is reported there.
        let at = respan(private.clone(), expr.span());
        let key =
            quote_spanned!(expr.span()=> <_ as #at::IdempotencyKey>::idempotency_key(&(#expr)));
        out.extend(quote!(#engine::set_idempotency_key(&mut #call, #key);));
    }
    if let Some(expr) = &config.breaker_key {
        let k = local("__resilient_key");
        let at = respan(private.clone(), expr.span());
        // The key's type is named by `_` at the expression: an error is reported there (a
        // generated local's own span would be the attribute's).
        let key = quote_spanned!(expr.span()=> <_ as #at::BreakerKey>::breaker_key(&#k));
        out.extend(quote! {
            {
                let #k = #expr;
                #engine::set_breaker_key(&mut #call, #key);
            }
        });
    }
    out
}

/// Fresh arguments for every attempt, made just before it and moved into it, so that the
/// attempt owns them: its future is `Send` when they are (a borrow would ask `Sync` too), and
/// the caller's future keeps no storage for them across the attempt.
///
/// An attempt that may capture by move (`Config::move_attempt`) is an `async move` block (or a
/// `move` closure) and takes them as they are. Otherwise (`&mut self`, `self: Arc<Self>`, which
/// must stay with the loop) it captures by reference, and each argument is wrapped in
/// `Owned`, which the attempt unwraps by value (`moves`): a use of a `Copy` argument alone would
/// be captured by reference.
fn rebinds(config: &Config, private: &TokenStream) -> TokenStream {
    config
        .rebinds
        .iter()
        .map(|rebind| {
            let (ident, mutability) = rebind.binding();
            let value = match rebind {
                // A site that runs its body once clones only for its fallback: the error for an
                // argument that is not `Clone` says so.
                Rebind::Clone { span, .. } if !config.repeats() => {
                    let private = respan(private.clone(), *span);
                    quote_spanned!(*span=> #private::clone_for_fallback(&#ident))
                }
                Rebind::Clone { span, .. } => {
                    let private = respan(private.clone(), *span);
                    // Spanned on the argument's type: rustc's "consider borrowing" then
                    // suggests `&Type`, the fix.
                    quote_spanned!(*span=> <_ as #private::CloneArg>::clone_arg(&#ident))
                }
                Rebind::Reborrow { .. } => quote!(&mut *#ident),
            };
            if config.move_attempt() {
                quote! {
                    #[allow(unused_variables, unused_mut, clippy::clone_on_copy, clippy::redundant_clone)]
                    let #mutability #ident = #value;
                }
            } else {
                quote! {
                    #[allow(unused_variables, clippy::clone_on_copy, clippy::redundant_clone)]
                    let #ident = #private::Owned(#value);
                }
            }
        })
        .collect()
}

/// The attempt's first statements when it captures by reference: its arguments, unwrapped from
/// their `Owned` by value (see `rebinds`).
///
/// With `&mut self`, the attempt also borrows `*self` mutably whatever the body does with it: a
/// body that only reads through `self` would otherwise borrow it shared, and the call would be
/// `Send` only if `Self` were `Sync`, where the plain method asks `Send` alone.
fn moves(config: &Config, private: &TokenStream) -> TokenStream {
    if config.move_attempt() {
        return TokenStream::new();
    }
    let mut out: TokenStream = config
        .rebinds
        .iter()
        .map(|rebind| {
            let (ident, mutability) = rebind.binding();
            quote! {
                #[allow(unused_variables, unused_mut)]
                let #mutability #ident = #private::Owned::into_inner(#ident);
            }
        })
        .collect();
    if config.receiver == Receiver::Unique {
        out.extend(quote! {
            #[allow(clippy::let_underscore_untyped)]
            let _ = &mut *self;
        });
    }
    out
}

/// The fn's parameters as the caller sees them: a rebound parameter loses its `mut`, which
/// belongs to each attempt's own binding (the parameter itself is only ever cloned or
/// reborrowed, and would otherwise be an unused `mut`).
fn strip_rebound_mut(config: &Config, sig: &mut syn::Signature) {
    for arg in &mut sig.inputs {
        if let syn::FnArg::Typed(pat_type) = arg {
            strip_mut(&mut pat_type.pat, &config.rebinds);
        }
    }
}

fn strip_mut(pat: &mut syn::Pat, rebinds: &[Rebind]) {
    match pat {
        syn::Pat::Ident(p) => {
            if rebinds.iter().any(|r| *r.binding().0 == p.ident) {
                p.mutability = None;
            }
            if let Some((_, sub)) = &mut p.subpat {
                strip_mut(sub, rebinds);
            }
        }
        syn::Pat::Tuple(t) => t.elems.iter_mut().for_each(|p| strip_mut(p, rebinds)),
        syn::Pat::TupleStruct(t) => t.elems.iter_mut().for_each(|p| strip_mut(p, rebinds)),
        syn::Pat::Struct(s) => s
            .fields
            .iter_mut()
            .for_each(|f| strip_mut(&mut f.pat, rebinds)),
        syn::Pat::Slice(s) => s.elems.iter_mut().for_each(|p| strip_mut(p, rebinds)),
        syn::Pat::Reference(r) => strip_mut(&mut r.pat, rebinds),
        syn::Pat::Paren(p) => strip_mut(&mut p.pat, rebinds),
        syn::Pat::Type(t) => strip_mut(&mut t.pat, rebinds),
        _ => {}
    }
}

/// One attempt: the user's body behind a fake return edge that pins `?` and type errors to the
/// declared return type (the way `tracing::instrument` does), after `moves`: the attempt's own
/// arguments, made by `rebinds` just before it and moved in.
fn attempt(
    config: &Config,
    block: &syn::Block,
    rebinds: &TokenStream,
    moves: &TokenStream,
) -> TokenStream {
    let ret = &config.ret;
    let fake = local("__resilient_ret");
    let anchor = quote_spanned! {ret.span()=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::let_with_type_underscore,
            clippy::needless_return,
            clippy::unreachable
        )]
        if false {
            let #fake: #ret = loop {};
            return #fake;
        }
    };
    // The body's statements, not its block: a block as the attempt's only expression is what
    // rustc's `unused_braces` lint flags, on the user's braces.
    let stmts = &block.stmts;
    let attempt = match (config.is_async, config.move_attempt()) {
        // (`moves` is empty when the attempt moves its captures.)
        (true, true) => quote_spanned!(block.span()=> async move { #anchor #(#stmts)* }),
        (true, false) => quote_spanned!(block.span()=> async { #moves #anchor #(#stmts)* }),
        (false, true) => quote_spanned!(block.span()=> move || { #anchor #(#stmts)* }),
        (false, false) => quote_spanned!(block.span()=> || { #moves #anchor #(#stmts)* }),
    };
    if rebinds.is_empty() {
        attempt
    } else {
        // The clones are locals of this block alone, moved into the attempt: the caller's future
        // keeps no storage for them across the attempt.
        quote!({ #rebinds #attempt })
    }
}

/// What `Step::Refresh` does: refresh the credentials once, or fail the call with the refresh's
/// error.
fn refresh(
    config: &Config,
    private: &TokenStream,
    call: &Ident,
    exit: &TokenStream,
) -> TokenStream {
    let Some(path) = &config.refresh else {
        return TokenStream::new();
    };
    let ret = &config.ret;
    let at_ret = respan(private.clone(), ret.span());
    let err = quote_spanned!(ret.span()=> <#ret as #at_ret::ReturnType>::Err);
    let arg = match config.receiver {
        Receiver::None => TokenStream::new(),
        Receiver::Shared | Receiver::Unique | Receiver::Value => quote!(self),
        Receiver::Typed => quote!(&self),
    };
    let r = local("__resilient_r");
    let at_path = respan(private.clone(), path.span());
    // Spanned on the hook's path: a hook of the wrong shape is reported there, once.
    let end = if config.is_async {
        quote_spanned!(path.span()=>
            #at_path::refresh(
                &mut #call,
                <_ as #at_path::RefreshFuture<#err>>::into_refresh(#path(#arg)),
            )
            .await
        )
    } else {
        quote_spanned!(path.span()=>
            #at_path::refreshed(
                &mut #call,
                <_ as #at_path::RefreshResult<#err>>::into_refresh_result(#path(#arg)),
            )
        )
    };
    quote! {
        // The deadline bounds the refresh too.
        if let #private::Err(#r) = #end {
            #exit #r;
        }
    }
}

/// The call to the fallback with the last error `e`: the receiver and the arguments by
/// reference, then the error (or the error alone, for a fn of the error), through the site's
/// own trait, whose message shows the signature expected (see `fallback_traits`). Awaited when
/// the fallback is async; a blocking fn's fallback must be a plain fn.
fn fallback_call(
    config: &Config,
    fallback: &Fallback,
    private: &TokenStream,
    e: &Ident,
) -> TokenStream {
    let path = &fallback.path;
    // At the fallback's name (`cached` of `Self::cached`): a fallback of the wrong shape is
    // reported there.
    let span = path
        .segments
        .last()
        .map_or_else(|| path.span(), |s| s.ident.span());
    let at_path = respan(private.clone(), span);
    let ret = &config.ret;
    let at_ret = respan(private.clone(), ret.span());
    let ok = quote_spanned!(ret.span()=> <#ret as #at_ret::ReturnType>::Ok);
    let err = quote_spanned!(ret.span()=> <#ret as #at_ret::ReturnType>::Err);
    let mut passed = match config.receiver {
        Receiver::None | Receiver::Value => Vec::new(),
        Receiver::Shared => vec![quote!(self)],
        Receiver::Unique => vec![quote!(&mut *self)],
        Receiver::Typed => vec![quote!(&*self)],
    };
    passed.extend(fallback.args.iter().map(|a| {
        let ident = &a.ident;
        if a.is_ref {
            quote!(&*#ident)
        } else {
            quote!(&#ident)
        }
    }));
    passed.push(quote!(#e));
    let out = local("__resilient_fallback_out");
    let kind = local("__resilient_fallback_kind");
    let args = local("__resilient_fallback_args");
    // The values come first: their types are settled before the fallback's, so a fallback of
    // the wrong shape is the site's trait not implemented, not a mismatch in the values.
    let called = quote_spanned! {span=>
        let #args = (#(#passed,)*);
        let (#out, #kind) =
            <_ as __ResilientFallback<_, #ok, #err, _>>::__resilient_fallback(#args, #path);
    };
    if config.is_async {
        quote_spanned! {span=>
            {
                #called
                let _ = #kind;
                <_ as #at_path::FallbackOutput<#ok, #err, _>>::into_fallback(#out).await
            }
        }
    } else {
        quote_spanned! {span=>
            {
                #called
                <_ as __ResilientBlockingFallback<_, #ok, #err>>::__resilient_result(#kind, #out)
            }
        }
    }
}

/// The site's own fallback trait, implemented for every fn of the right shape (and, for a site
/// with a receiver or arguments, for a fn of the error alone): a fallback of the wrong shape is
/// one error, at its path, that shows the signature expected for this fn. A blocking site has a
/// second one, which refuses an async fallback.
fn fallback_traits(config: &Config, fallback: &Fallback, private: &TokenStream) -> TokenStream {
    let name = fallback
        .path
        .segments
        .last()
        .map_or_else(String::new, |s| s.ident.to_string());
    let operation = &config.operation;
    let expected = &fallback.expected;
    let mut message = if config.is_async {
        format!(
            "`{name}` cannot be the fallback of `{operation}`: expected `async {expected}` or the same without `async`"
        )
    } else {
        format!("`{name}` cannot be the fallback of `{operation}`: expected `{expected}`")
    };
    if fallback.error_type.is_none() {
        message.push_str(", where `E` is the error type");
    }
    let message = escape_braces(&message);
    let note = "a fallback gets the receiver, then each argument by reference (one that is a reference already, as a shared one), then the error; a fn of the error alone works too";
    // One type parameter per value passed: the receiver, the arguments, the error.
    let receiver = usize::from(!matches!(config.receiver, Receiver::None | Receiver::Value));
    let n = receiver + fallback.args.len() + 1;
    let params: Vec<Ident> = (0..n)
        .map(|i| Ident::new(&format!("__A{i}"), Span::mixed_site()))
        .collect();
    let values: Vec<Ident> = (0..n)
        .map(|i| Ident::new(&format!("__a{i}"), Span::mixed_site()))
        .collect();
    let last_param = &params[n - 1];
    let last_value = &values[n - 1];
    // A fn of the error alone, when that is another shape than the full one. Without a receiver
    // or arguments it is the same shape: the impl is there all the same, never to apply, so that
    // a fallback of the wrong shape matches none of two impls and is reported as the site's
    // trait not implemented (with one impl, rustc reports the mismatch of its `FnOnce` bound).
    let never = if n > 1 {
        TokenStream::new()
    } else {
        quote!(__F: #private::NeverApplies,)
    };
    let error_only = {
        quote! {
            #[diagnostic::do_not_recommend]
            impl<__F, __R, #(#params,)* __T, __E, __M>
                __ResilientFallback<(#(#params,)*), __T, __E, (__M, #private::ErrorOnly)> for __F
            where
                __F: #private::FnOnce(#last_param) -> __R,
                __R: #private::FallbackOutput<__T, __E, __M>,
                #never
            {
                type Out = __R;
                #[inline(always)]
                #[allow(unused_variables)]
                fn __resilient_fallback(
                    (#(#values,)*): (#(#params,)*),
                    f: Self,
                ) -> (__R, #private::PhantomData<(__M, #private::ErrorOnly)>) {
                    (f(#last_value), #private::PhantomData)
                }
            }
        }
    };
    let blocking = if config.is_async {
        TokenStream::new()
    } else {
        let message = escape_braces(&format!(
            "`{operation}` is a blocking fn, so its fallback cannot be async: make `{name}` a plain fn, `{expected}`"
        ));
        quote! {
            #[diagnostic::on_unimplemented(
                message = #message,
                label = "an async fn, which a blocking fn cannot await",
                note = "or make the site's fn async"
            )]
            trait __ResilientBlockingFallback<__R, __T, __E> {
                fn __resilient_result(self, r: __R) -> #private::Result<__T, __E>;
            }
            #[diagnostic::do_not_recommend]
            impl<__W, __T, __E> __ResilientBlockingFallback<#private::Result<__T, __E>, __T, __E>
                for #private::PhantomData<(#private::Now, __W)>
            {
                #[inline(always)]
                fn __resilient_result(self, r: #private::Result<__T, __E>) -> #private::Result<__T, __E> {
                    r
                }
            }
            // Never applies: with two impls, an async fallback is reported with the message
            // above, without rustc's comparison of `Later` with `Now`.
            #[diagnostic::do_not_recommend]
            impl<__W, __R, __T, __E> __ResilientBlockingFallback<__R, __T, __E>
                for #private::PhantomData<(#private::Later, __W)>
            where
                __W: #private::NeverApplies,
            {
                #[inline(always)]
                fn __resilient_result(self, _: __R) -> #private::Result<__T, __E> {
                    <__W as #private::NeverApplies>::never()
                }
            }
        }
    };
    quote! {
        #[diagnostic::on_unimplemented(
            message = #message,
            label = "not a fallback of this fn's shape",
            note = #note
        )]
        trait __ResilientFallback<__Args, __T, __E, __M> {
            type Out;
            fn __resilient_fallback(args: __Args, f: Self) -> (Self::Out, #private::PhantomData<__M>);
        }
        #[diagnostic::do_not_recommend]
        impl<__F, __R, #(#params,)* __T, __E, __M>
            __ResilientFallback<(#(#params,)*), __T, __E, (__M, #private::AllArgs)> for __F
        where
            __F: #private::FnOnce(#(#params),*) -> __R,
            __R: #private::FallbackOutput<__T, __E, __M>,
        {
            type Out = __R;
            #[inline(always)]
            fn __resilient_fallback(
                (#(#values,)*): (#(#params,)*),
                f: Self,
            ) -> (__R, #private::PhantomData<(__M, #private::AllArgs)>) {
                (f(#(#values),*), #private::PhantomData)
            }
        }
        #error_only
        #blocking
    }
}

/// A message for `#[diagnostic::on_unimplemented]`, whose braces are placeholders.
fn escape_braces(message: &str) -> String {
    message.replace('{', "{{").replace('}', "}}")
}

/// The checks of `retry_on`, `abort_on` and `refresh` against the classes the error type's
/// derive declares, in a closure that is type-checked and never called: each variant's kind
/// (`__private::kind`) is found by method resolution, [`Unknown`](kind) for a hand-written
/// `Classify`, and must pass the key's rule trait, spanned on the variant's path (or the hook's).
fn class_checks(config: &Config, private: &TokenStream) -> TokenStream {
    if config.retry_on.is_empty() && config.abort_on.is_empty() && config.refresh.is_none() {
        return TokenStream::new();
    }
    let ret = &config.ret;
    let at_ret = respan(private.clone(), ret.span());
    let err = quote_spanned!(ret.span()=> <#ret as #at_ret::ReturnType>::Err);
    // Every token of a check is spanned on the variant's name (or the hook's path), the
    // locals too: a generated local's own span would be reported at the attribute.
    let check = |span: Span, key: u64, method: &str, rules: &[&str]| {
        let at = respan(private.clone(), span);
        let e = Ident::new("__resilient_e", span);
        let k = Ident::new("__resilient_kind", span);
        let method = Ident::new(method, span);
        let rules = rules.iter().map(|rule| {
            let rule = Ident::new(rule, span);
            quote_spanned!(span=> <_ as #at::#rule<_>>::check(#e, #k);)
        });
        quote_spanned! {span=>
            #[allow(unused_imports, unused_variables, clippy::let_underscore_untyped)]
            let _ = |#e: &#err| {
                use #at::{KnownAuthKind as _, KnownKind as _, UnknownKind as _};
                let #k = (&#at::Probe::<_, #key>::of(#e)).#method();
                #(#rules)*
            };
        }
    };
    let mut checks = TokenStream::new();
    for path in &config.retry_on {
        checks.extend(check(
            last_span(path),
            variant_key_of(path),
            "kind",
            &[
                "RetryOnNotPolicy",
                "RetryOnNotTerminal",
                "RetryOnNotRetried",
            ],
        ));
    }
    for path in &config.abort_on {
        checks.extend(check(
            last_span(path),
            variant_key_of(path),
            "kind",
            &["AbortOnRetried"],
        ));
    }
    if let Some(path) = &config.refresh {
        checks.extend(check(path.span(), 0, "auth_kind", &["RefreshNeedsAuth"]));
    }
    checks
}

/// The span of a path's last segment: the variant's name.
fn last_span(path: &syn::Path) -> Span {
    path.segments
        .last()
        .map_or_else(|| path.span(), |s| s.ident.span())
}

/// The key of the variant a `retry_on` or `abort_on` path names: its last segment's.
fn variant_key_of(path: &syn::Path) -> u64 {
    path.segments
        .last()
        .map_or(0, |s| crate::variant_key(&s.ident.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Errors;
    use crate::resilient::{parse, validate};

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        let args = parse::args(args).unwrap_or_default();
        let Ok(item) = syn::parse2::<syn::ItemFn>(item) else {
            return String::new();
        };
        match validate::validate(args, &item, Errors::new()) {
            Ok(config) => expand(&config, item).to_string(),
            Err(_) => String::new(),
        }
    }

    #[test]
    fn keeps_the_signature_and_attributes() {
        let out = expand_str(
            quote!(retries = 2, idempotent),
            quote! {
                /// Docs.
                #[inline]
                pub(crate) async fn list<'a, T: Clone>(&mut self, t: &'a str) -> Result<Vec<T>, E> where T: Send { Ok(Vec::new()) }
            },
        );
        assert!(out.starts_with("# [doc = r\" Docs.\"] # [inline] pub (crate) async fn list < 'a , T : Clone > (& mut self , t : & 'a str) -> Result < Vec < T > , E > where T : Send {"), "{out}");
        assert!(out.contains(". with_retries (2u32)"), "{out}");
        assert!(out.contains(". idempotent ()"), "{out}");
        assert!(
            out.contains(":: attempt (& mut __resilient_call , async"),
            "{out}"
        );
    }

    #[test]
    fn blocking_fns_use_the_blocking_engine() {
        let out = expand_str(
            quote!(),
            quote!(
                fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains(":: attempt_blocking (& mut __resilient_call , move ||"),
            "{out}"
        );
        assert!(!out.contains("await"), "{out}");
    }

    #[test]
    fn from_rejected_only_when_the_runtime_may_reject() {
        let plain = expand_str(
            quote!(),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(!plain.contains("from_rejected"), "{plain}");
        let breaker = expand_str(
            quote!(breaker = "g"),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(breaker.contains("with_from_rejected"), "{breaker}");
        assert!(breaker.contains("with_breaker (\"g\")"), "{breaker}");
    }

    #[test]
    fn a_sensitive_key_marks_the_keyed_breaker_of_the_policy() {
        let item = quote!(
            async fn f(tenant: &str) -> Result<(), E> {
                Ok(())
            }
        );
        let out = expand_str(
            quote!(breaker = "okta", breaker_key = tenant, sensitive_key),
            item.clone(),
        );
        assert!(
            out.contains(". with_keyed_breaker () . with_sensitive_key ()"),
            "{out}"
        );
        let plain = expand_str(quote!(breaker = "okta", breaker_key = tenant), item);
        assert!(!plain.contains("with_sensitive_key"), "{plain}");
    }

    #[test]
    fn the_name_the_budget_and_blocking_reach_the_policy() {
        let out = expand_str(
            quote!(
                name = "graph::users::list",
                idempotent,
                budget = "graph-reads"
            ),
            quote!(
                fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            out.contains(". with_name (\"graph::users::list\") . blocking ()"),
            "{out}"
        );
        assert!(out.contains(". with_budget (\"graph-reads\")"), "{out}");
        let plain = expand_str(
            quote!(),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(
            !plain.contains("with_name") && !plain.contains("blocking ()"),
            "{plain}"
        );
    }

    #[test]
    fn the_connector_label_is_the_attributes_else_the_crates_name() {
        let item = quote!(
            async fn f() -> Result<(), E> {
                Ok(())
            }
        );
        let out = expand_str(quote!(connector = "msgraph"), item.clone());
        assert!(out.contains(". with_connector (\"msgraph\")"), "{out}");
        assert!(!out.contains("CARGO_CRATE_NAME"), "{out}");
        let plain = expand_str(quote!(), item);
        assert!(
            plain.contains(". with_connector (:: resilience_runtime :: __private :: env ! (\"CARGO_CRATE_NAME\"))"),
            "{plain}"
        );
    }

    #[test]
    fn a_site_safe_to_repeat_loops_even_without_retries() {
        let out = expand_str(
            quote!(retries = 0, idempotent, backoff(base = "10ms")),
            quote!(
                async fn f(id: String) -> Result<(), E> {
                    drop(id);
                    Ok(())
                }
            ),
        );
        // A configuration may give it retries: the body is in a loop, its argument cloned per
        // attempt, and the schedule is the attribute's.
        assert!(out.contains("loop { match"), "{out}");
        assert!(out.contains("clone_arg (& id)"), "{out}");
        assert!(out.contains(". with_base ("), "{out}");
        let once = expand_str(
            quote!(retries = 0),
            quote!(
                async fn f(id: String) -> Result<(), E> {
                    drop(id);
                    Ok(())
                }
            ),
        );
        assert!(
            !once.contains("loop { match") && once.contains(":: once ("),
            "{once}"
        );
    }

    #[test]
    fn honours_the_crate_path() {
        let out = expand_str(
            quote!(crate = "::my::rt"),
            quote!(
                async fn f() -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert!(out.contains(":: my :: rt :: __private :: start"), "{out}");
        assert!(!out.contains("resilience_runtime"), "{out}");
    }
}
