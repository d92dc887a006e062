//! Expand: a finished [`Model`] in, `impl Classify` (and `impl CarriesRejected` when a variant is
//! marked `rejected`) out. Every `match` lists every variant, so no wildcard arm can become
//! unreachable.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::validate::{Class, Model, VariantModel};
use crate::diag::respan;

fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The same hygienic local, reported at `span` (a field's type) when an error involves it.
fn located(local: &Ident, span: Span) -> Ident {
    Ident::new(&local.to_string(), Span::mixed_site().located_at(span))
}

/// The impls of a valid model.
pub(crate) fn expand(model: &Model) -> TokenStream {
    let krate = &model.krate;
    let private = quote!(#krate::__private);
    let ident = &model.ident;
    let (impl_generics, ty_generics, _) = model.generics.split_for_impl();
    let mut predicates: Vec<TokenStream> = model
        .generics
        .where_clause
        .as_ref()
        .map(|w| w.predicates.iter().map(|p| quote!(#p)).collect())
        .unwrap_or_default();
    for v in &model.variants {
        // A secret field must print `[redacted]`: checked here, reported at the field's type.
        for ty in &v.secrets {
            let private = respan(private.clone(), ty.span());
            predicates.push(quote_spanned!(ty.span()=> #ty: #private::Redacted));
        }
        if let Class::Delegate(_, ty) = &v.class {
            let private = respan(private.clone(), ty.span());
            predicates.push(quote_spanned!(ty.span()=> #ty: #private::Classify));
        }
    }

    let class = arms(model, &private, |v, private| match &v.class {
        Class::Fixed(name) => {
            let name = Ident::new(name, Span::call_site());
            (None, quote!(#private::ErrorClass::#name))
        }
        Class::Terminal(variant, _) => {
            let variant = Ident::new(variant, Span::call_site());
            (None, quote!(#private::TerminalReason::#variant.class()))
        }
        Class::Status(member, span) => {
            let f = local("__resilient_field");
            let at = respan(private.clone(), *span);
            let arg = located(&f, *span);
            let status = quote_spanned!(*span=> <_ as #at::HttpStatus>::http_status(#arg));
            (
                Some((member.clone(), arg)),
                quote!(#private::ErrorClass::from_http_status(#status)),
            )
        }
        Class::Delegate(member, _) => {
            let f = local("__resilient_field");
            (
                Some((member.clone(), f.clone())),
                quote!(#private::Classify::class(#f)),
            )
        }
        Class::Rejected(member, ty) => {
            let (arg, r) = rejected_field(private, ty.span());
            (
                Some((member.clone(), arg)),
                quote!(#private::Classify::class(#r)),
            )
        }
        Class::Verdict(member, span) => {
            let (arg, value) = verdict(private, *span, "verdict_class");
            (Some((member.clone(), arg)), value)
        }
    });

    let retry_after = arms(model, &private, |v, private| {
        let f = local("__resilient_field");
        match (&v.retry_after, &v.class) {
            (Some((member, span)), _) => {
                let at = respan(private.clone(), *span);
                let arg = located(&f, *span);
                let hint =
                    quote_spanned!(*span=> <_ as #at::RetryAfterField>::retry_after_hint(#arg));
                (Some((member.clone(), arg)), hint)
            }
            (None, Class::Delegate(member, _)) => (
                Some((member.clone(), f.clone())),
                quote!(#private::Classify::retry_after(#f)),
            ),
            (None, Class::Rejected(member, ty)) => {
                let (arg, r) = rejected_field(private, ty.span());
                (
                    Some((member.clone(), arg)),
                    quote!(#private::Classify::retry_after(#r)),
                )
            }
            (None, Class::Verdict(member, span)) => {
                let (arg, value) = verdict(private, *span, "verdict_retry_after");
                (Some((member.clone(), arg)), value)
            }
            (None, _) => (None, quote!(#private::None)),
        }
    });

    let code = arms(model, &private, |v, private| {
        let f = local("__resilient_field");
        match (&v.code, &v.class) {
            (Some(code), _) => (None, quote!(#private::Some(#code))),
            (None, Class::Status(member, span)) => {
                let at = respan(private.clone(), *span);
                let arg = located(&f, *span);
                let status = quote_spanned!(*span=> <_ as #at::HttpStatus>::http_status(#arg));
                (
                    Some((member.clone(), arg)),
                    quote!(#private::status_code_str(#status)),
                )
            }
            (None, Class::Terminal(_, name)) => (None, quote!(#private::Some(#name))),
            (None, Class::Delegate(member, _)) => (
                Some((member.clone(), f.clone())),
                quote!(#private::Classify::code(#f)),
            ),
            (None, Class::Rejected(member, ty)) => {
                let (arg, r) = rejected_field(private, ty.span());
                (
                    Some((member.clone(), arg)),
                    quote!(#private::Classify::code(#r)),
                )
            }
            (None, Class::Verdict(member, span)) => {
                let (arg, value) = verdict(private, *span, "verdict_code");
                (Some((member.clone(), arg)), value)
            }
            (None, Class::Fixed(_)) => (None, quote!(#private::None)),
        }
    });

    let terminal = arms(model, &private, |v, private| match &v.class {
        Class::Terminal(variant, _) => {
            let variant = Ident::new(variant, Span::call_site());
            (
                None,
                quote!(#private::Some(#private::TerminalReason::#variant)),
            )
        }
        Class::Delegate(member, _) => {
            let f = local("__resilient_field");
            (
                Some((member.clone(), f.clone())),
                quote!(#private::Classify::terminal_reason(#f)),
            )
        }
        _ => (None, quote!(#private::None)),
    });

    let breaker = arms(model, &private, |v, private| match (v.breaker, &v.class) {
        (Some(outcome), _) => {
            let outcome = Ident::new(outcome, Span::call_site());
            (None, quote!(#private::Some(#private::Outcome::#outcome)))
        }
        (None, Class::Delegate(member, _)) => {
            let f = local("__resilient_field");
            (
                Some((member.clone(), f.clone())),
                quote!(#private::Classify::breaker_outcome(#f)),
            )
        }
        (None, _) => (None, quote!(#private::None)),
    });

    let classify = quote! {
        #[automatically_derived]
        #[allow(
            unused_variables,
            clippy::match_single_binding,
            clippy::match_same_arms
        )]
        impl #impl_generics #private::Classify for #ident #ty_generics where #(#predicates,)* {
            fn class(&self) -> #private::ErrorClass {
                #class
            }
            fn retry_after(&self) -> #private::Option<#private::Duration> {
                #retry_after
            }
            fn code(&self) -> #private::Option<&str> {
                #code
            }
            fn terminal_reason(&self) -> #private::Option<#private::TerminalReason> {
                #terminal
            }
            fn breaker_outcome(&self) -> #private::Option<#private::Outcome> {
                #breaker
            }
        }
    };

    let carries = model.rejected().map(|(rejected, member, ty)| {
        let r = local("__resilient_rejected");
        let build_path = path(model, rejected);
        // Through `RejectedField`, spanned on the field's type: a field that is not the
        // runtime's `Rejected` is one error, there.
        let at = respan(private.clone(), ty.span());
        let build = quote_spanned!(ty.span()=>
            #build_path { #member: <_ as #at::RejectedField>::from_rejected(#r) }
        );
        let matched = arms(model, &private, |v, private| {
            if std::ptr::eq(v, rejected) {
                let (arg, r) = rejected_field(private, ty.span());
                (Some((member.clone(), arg)), quote!(#private::Some(#r)))
            } else {
                (None, quote!(#private::None))
            }
        });
        quote! {
            #[automatically_derived]
            #[allow(unused_variables, clippy::match_single_binding)]
            impl #impl_generics #private::CarriesRejected for #ident #ty_generics where #(#predicates,)* {
                fn from_rejected(#r: #private::Rejected) -> Self {
                    #build
                }
                fn rejected(&self) -> #private::Option<&#private::Rejected> {
                    #matched
                }
            }
        }
    });

    let kinds = kinds(model, &private);
    quote!(#classify #carries #kinds)
}

/// What `#[resilient]` may know of the type's classes at compile time: each variant's kind
/// (`VariantKind<KEY>`, keyed by its name), and whether any variant may be `auth` (`AuthKind`).
/// A class decided at run time (`status`, `delegate`, `verdict`) is `Unknown`: it passes every
/// check.
fn kinds(model: &Model, private: &TokenStream) -> TokenStream {
    let ident = &model.ident;
    let (impl_generics, ty_generics, where_clause) = model.generics.split_for_impl();
    let kind_of = |class: &Class| match class {
        Class::Fixed("Transient" | "Throttled") => "Retried",
        Class::Fixed("Permanent") => "Permanent",
        Class::Fixed("PolicyViolation") => "Policy",
        Class::Fixed("Auth") => "Auth",
        Class::Terminal(..) => "Terminal",
        Class::Rejected(..) => "Rejected",
        _ => "Unknown",
    };
    let variants = model.variants.iter().filter_map(|v| {
        let name = v.ident.as_ref().filter(|_| model.is_enum)?;
        let key = crate::variant_key(&name.to_string());
        let kind = Ident::new(kind_of(&v.class), Span::call_site());
        Some(quote! {
            #[automatically_derived]
            impl #impl_generics #private::VariantKind<#key> for #ident #ty_generics #where_clause {
                type Kind = #private::kind::#kind;
            }
        })
    });
    let may_auth = model
        .variants
        .iter()
        .any(|v| matches!(kind_of(&v.class), "Auth" | "Unknown"));
    let auth = Ident::new(
        if may_auth { "MayAuth" } else { "NeverAuth" },
        Span::call_site(),
    );
    quote! {
        #(#variants)*
        #[automatically_derived]
        impl #impl_generics #private::AuthKind for #ident #ty_generics #where_clause {
            type Kind = #private::kind::#auth;
        }
    }
}

/// A call of `VerdictField::method` on a variant's verdict field, reported at the field's type
/// (`span`) when the field is not a verdict: the binding and the call.
fn verdict(private: &TokenStream, span: Span, method: &str) -> (Ident, TokenStream) {
    let at = respan(private.clone(), span);
    let arg = located(&local("__resilient_field"), span);
    let method = Ident::new(method, span);
    (
        arg.clone(),
        quote_spanned!(span=> <_ as #at::VerdictField>::#method(#arg)),
    )
}

/// The binding of a `rejected` variant's field and the runtime's `Rejected` in it, through
/// `RejectedField`, spanned on the field's type (`span`).
fn rejected_field(private: &TokenStream, span: Span) -> (Ident, TokenStream) {
    let at = respan(private.clone(), span);
    let arg = located(&local("__resilient_field"), span);
    (
        arg.clone(),
        quote_spanned!(span=> <_ as #at::RejectedField>::as_rejected(#arg)),
    )
}

/// `Self::Variant` or `Self`.
fn path(model: &Model, v: &VariantModel) -> TokenStream {
    match (&v.ident, model.is_enum) {
        (Some(ident), true) => quote!(Self::#ident),
        _ => quote!(Self),
    }
}

/// A `match self` with one arm per variant; `arm` gives the field to bind (if any) and the value.
fn arms(
    model: &Model,
    private: &TokenStream,
    arm: impl Fn(&VariantModel, &TokenStream) -> (Option<(syn::Member, Ident)>, TokenStream),
) -> TokenStream {
    if model.variants.is_empty() {
        return quote!(match *self {});
    }
    let arms = model.variants.iter().map(|v| {
        let path = path(model, v);
        let (binding, value) = arm(v, private);
        let pattern = match binding {
            Some((member, f)) => quote!(#path { #member: #f, .. }),
            None => quote!(#path { .. }),
        };
        quote!(#pattern => #value,)
    });
    quote! {
        match self {
            #(#arms)*
        }
    }
}

/// The stub emitted beside the errors, so that one mistake in the derive does not cascade into
/// "does not classify" errors at every use of the type (thiserror's fallback).
pub(crate) fn stub(input: &syn::DeriveInput, with_rejected: bool) -> TokenStream {
    let krate = crate_path(input);
    let private = quote!(#krate::__private);
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let carries = with_rejected.then(|| {
        quote! {
            #[automatically_derived]
            impl #impl_generics #private::CarriesRejected for #ident #ty_generics #where_clause {
                fn from_rejected(_: #private::Rejected) -> Self {
                    ::core::unreachable!()
                }
                fn rejected(&self) -> #private::Option<&#private::Rejected> {
                    ::core::unreachable!()
                }
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #private::Classify for #ident #ty_generics #where_clause {
            fn class(&self) -> #private::ErrorClass {
                ::core::unreachable!()
            }
        }
        #carries
    }
}

/// The `crate = "..."` path read straight from the attributes, for the stub.
fn crate_path(input: &syn::DeriveInput) -> TokenStream {
    let mut found = None;
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("connector"))
    {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                found = lit.parse::<syn::Path>().ok();
            } else if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            }
            Ok(())
        });
    }
    match found {
        Some(path) => quote!(#path),
        None => quote!(::resilience_runtime),
    }
}

/// Whether any variant or the struct is marked `#[connector(rejected)]`, read straight from the
/// attributes, for the stub.
pub(crate) fn mentions_rejected(input: &syn::DeriveInput) -> bool {
    let marked = |attrs: &[syn::Attribute]| {
        attrs
            .iter()
            .filter(|a| a.path().is_ident("connector"))
            .any(|a| {
                a.meta.require_list().is_ok_and(|l| {
                    l.tokens
                        .clone()
                        .into_iter()
                        .any(|t| t.to_string() == "rejected")
                })
            })
    };
    match &input.data {
        syn::Data::Enum(e) => e.variants.iter().any(|v| marked(&v.attrs)),
        _ => marked(&input.attrs),
    }
}
