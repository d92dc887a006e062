//! Parse: the attribute's arguments (darling) and the annotated item, each value kept with its
//! span. Nothing is checked here beyond the syntax.

use darling::FromMeta;
use darling::ast::NestedMeta;
use darling::util::Flag;
use proc_macro2::{Span, TokenStream};
use syn::spanned::Spanned;

/// The raw arguments of `#[resilient(...)]`.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct Args {
    /// Any expression, so that a value that is not a string gets a message that says what to
    /// write (`validate::string`).
    pub(crate) name: Option<Verbatim>,
    pub(crate) retries: Option<syn::LitInt>,
    #[darling(with = backoff_list)]
    pub(crate) backoff: Option<BackoffArgs>,
    pub(crate) jitter: Option<syn::LitStr>,
    pub(crate) breaker: Option<syn::LitStr>,
    pub(crate) breaker_key: Option<Verbatim>,
    pub(crate) sensitive_key: Flag,
    pub(crate) idempotent: Flag,
    pub(crate) idempotency_key: Option<Verbatim>,
    #[darling(with = duration)]
    pub(crate) timeout: Option<syn::LitStr>,
    #[darling(with = duration)]
    pub(crate) deadline: Option<syn::LitStr>,
    pub(crate) retry_on: Option<syn::ExprArray>,
    pub(crate) abort_on: Option<syn::ExprArray>,
    pub(crate) fallback: Option<syn::Path>,
    pub(crate) fallback_on: Option<Keyed<syn::ExprArray>>,
    pub(crate) retry_if_ok: Option<Keyed<syn::Path>>,
    pub(crate) refresh: Option<syn::Path>,
    pub(crate) rate_limit: Option<syn::LitStr>,
    pub(crate) bulkhead: Option<syn::LitStr>,
    /// As `name`.
    pub(crate) budget: Option<Verbatim>,
    /// As `name`.
    pub(crate) connector: Option<Verbatim>,
    #[darling(rename = "crate")]
    pub(crate) krate: Option<syn::Path>,
    /// Not a key: accepted only to explain that `retries` counts the extra attempts.
    pub(crate) max_attempts: Option<syn::Meta>,
    /// Not a key: accepted only to explain that `retries` counts the extra attempts.
    pub(crate) attempts: Option<syn::Meta>,
    /// Every key as written, with its span: for an error about a key itself (a key that needs an
    /// async fn), which belongs on the key rather than its value.
    #[darling(skip)]
    pub(crate) keys: Vec<(String, Span)>,
}

impl Args {
    /// Where `key` was written, if it was.
    pub(crate) fn key_span(&self, key: &str) -> Option<Span> {
        self.keys.iter().find(|(k, _)| k == key).map(|(_, s)| *s)
    }
}

/// An expression taken as written. (darling's `syn::Expr` would parse a string literal's
/// contents as an expression; `idempotency_key = "fixed"` means the string.)
#[derive(Debug, Clone)]
pub(crate) struct Verbatim(pub(crate) syn::Expr);

impl FromMeta for Verbatim {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        Ok(Verbatim(expr.clone()))
    }
}

/// A value with the span of its key, for an error about the key itself (a key that needs
/// another).
#[derive(Debug, Clone)]
pub(crate) struct Keyed<T> {
    pub(crate) key: Span,
    pub(crate) value: T,
}

impl<T: FromMeta> FromMeta for Keyed<T> {
    fn from_meta(meta: &syn::Meta) -> darling::Result<Self> {
        Ok(Keyed {
            key: meta.path().span(),
            value: T::from_meta(meta)?,
        })
    }
}

/// The raw arguments of `backoff(...)`.
#[derive(Debug, Default, FromMeta)]
#[darling(default)]
pub(crate) struct BackoffArgs {
    #[darling(with = duration)]
    pub(crate) base: Option<syn::LitStr>,
    #[darling(with = duration)]
    pub(crate) max: Option<syn::LitStr>,
    pub(crate) factor: Option<syn::Lit>,
    pub(crate) jitter: Option<syn::LitStr>,
}

/// A duration key's value: a string literal (`timeout = "10s"`). Anything else is refused with
/// what to write, spanned on the value (darling's own message names only the literal's type).
fn duration(meta: &syn::Meta) -> darling::Result<Option<syn::LitStr>> {
    let key = meta
        .path()
        .get_ident()
        .map_or_else(|| "the duration".to_owned(), ToString::to_string);
    let syn::Meta::NameValue(nv) = meta else {
        return Err(darling::Error::custom(format!(
            "`{key}` takes a duration: write `{key} = \"10s\"`"
        ))
        .with_span(meta));
    };
    let mut value = &nv.value;
    while let syn::Expr::Group(g) = value {
        value = &g.expr;
    }
    let write = match value {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => return Ok(Some(s.clone())),
        // A bare number has no unit: show it with the two it most likely meant.
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => {
            let n = i.base10_digits();
            format!("`{key} = \"{n}ms\"` or `{key} = \"{n}s\"`")
        }
        _ => format!("`{key} = \"10s\"`"),
    };
    Err(darling::Error::custom(format!(
        "a duration is a string with its unit: write {write} (units: `ms`, `s`, `m`, `h`, `days`)"
    ))
    .with_span(value))
}

/// `backoff(...)`: a list of keys. `backoff = "1ms"` is refused with what to write.
fn backoff_list(meta: &syn::Meta) -> darling::Result<Option<BackoffArgs>> {
    match meta {
        syn::Meta::NameValue(nv) => Err(darling::Error::custom(
            "`backoff` takes a list of keys: write `backoff(base = \"1ms\", max = \"1ms\")` \
             (the first wait and the longest; add `jitter = \"none\"` for a constant wait)",
        )
        .with_span(&nv.value)),
        _ => BackoffArgs::from_meta(meta).map(Some),
    }
}

/// The annotated item: a fn with a body, or what the attribute was put on by mistake.
pub(crate) enum Item {
    /// A fn with a body: free, inherent or in a trait impl.
    Fn(syn::ItemFn),
    /// A fn without a body, as declared in a trait.
    Declaration(syn::TraitItemFn),
    /// Any other item; the span is its keyword.
    Other(Span, &'static str),
}

/// Parses the attribute's arguments. darling reports unknown keys (with "did you mean"),
/// duplicates and wrongly typed values.
pub(crate) fn args(tokens: TokenStream) -> darling::Result<Args> {
    let items = NestedMeta::parse_meta_list(tokens)?;
    let mut args = Args::from_list(&items)?;
    args.keys = items
        .iter()
        .filter_map(|item| match item {
            NestedMeta::Meta(m) => {
                let path = m.path();
                path.get_ident().map(|i| (i.to_string(), path.span()))
            }
            _ => None,
        })
        .collect();
    Ok(args)
}

/// Parses the annotated item.
pub(crate) fn item(tokens: TokenStream) -> syn::Result<Item> {
    if let Ok(f) = syn::parse2::<syn::ItemFn>(tokens.clone()) {
        return Ok(Item::Fn(f));
    }
    if let Ok(f) = syn::parse2::<syn::TraitItemFn>(tokens.clone())
        && f.default.is_none()
    {
        return Ok(Item::Declaration(f));
    }
    if let Ok(item) = syn::parse2::<syn::Item>(tokens.clone()) {
        let (span, what) = describe(&item);
        return Ok(Item::Other(span, what));
    }
    if let Ok(item) = syn::parse2::<syn::ImplItem>(tokens.clone()) {
        let (span, what) = match &item {
            syn::ImplItem::Const(c) => (c.const_token.span, "a const"),
            syn::ImplItem::Type(t) => (t.type_token.span, "a type"),
            syn::ImplItem::Macro(m) => (m.mac.path.span(), "a macro invocation"),
            _ => (item.span(), "this item"),
        };
        return Ok(Item::Other(span, what));
    }
    // Not an item at all (e.g. a syntax error in the body): report the parser's error.
    syn::parse2::<syn::ItemFn>(tokens).map(Item::Fn)
}

fn describe(item: &syn::Item) -> (Span, &'static str) {
    match item {
        syn::Item::Struct(s) => (s.struct_token.span, "a struct"),
        syn::Item::Enum(e) => (e.enum_token.span, "an enum"),
        syn::Item::Union(u) => (u.union_token.span, "a union"),
        syn::Item::Impl(i) => (i.impl_token.span, "an impl block"),
        syn::Item::Trait(t) => (t.trait_token.span, "a trait"),
        syn::Item::Mod(m) => (m.mod_token.span, "a module"),
        syn::Item::Const(c) => (c.const_token.span, "a const"),
        syn::Item::Static(s) => (s.static_token.span, "a static"),
        syn::Item::Type(t) => (t.type_token.span, "a type alias"),
        syn::Item::Use(u) => (u.use_token.span, "a use declaration"),
        syn::Item::ForeignMod(f) => (f.abi.extern_token.span, "an extern block"),
        _ => (item.span(), "this item"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_every_key() {
        let args = args(quote!(
            name = "graph::devices::list",
            retries = 3,
            backoff(base = "1s", max = "16s", factor = 2, jitter = "full"),
            breaker = "graph",
            breaker_key = self.tenant.clone(),
            sensitive_key,
            idempotent,
            idempotency_key = request.id,
            timeout = "10s",
            deadline = "2m",
            retry_on = [E::A, E::B],
            abort_on = [E::C],
            fallback = cached,
            fallback_on = [E::A],
            retry_if_ok = still_running,
            refresh = Self::refresh,
            rate_limit = "graph",
            bulkhead = "graph",
            budget = "graph-reads",
            crate = "::my::rt"
        ))
        .ok();
        let args = args.unwrap_or_default();
        assert!(args.idempotent.is_present());
        assert!(args.sensitive_key.is_present());
        assert_eq!(args.retry_on.map(|a| a.elems.len()), Some(2));
        assert!(args.krate.is_some());
        assert!(args.name.is_some() && args.budget.is_some());
        assert!(args.backoff.and_then(|b| b.factor).is_some());
    }

    #[test]
    fn unknown_keys_and_duplicates_fail() {
        assert!(args(quote!(retires = 3)).is_err());
        assert!(args(quote!(timeout = "1s", timeout = "2s")).is_err());
        assert!(args(quote!(sensitive_key = true)).is_err());
        assert!(args(quote!(name = "a", name = "b")).is_err());
        assert!(args(quote!(budget)).is_err());
        let misspelt = args(quote!(breaker_key = k, sensitiv_key)).err();
        let message = misspelt.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("Did you mean `sensitive_key`"),
            "{message}"
        );
    }

    #[test]
    fn recognises_items() {
        assert!(matches!(
            item(quote!(
                fn f(&mut self) {}
            )),
            Ok(Item::Fn(_))
        ));
        assert!(matches!(
            item(quote!(
                fn f(&self) -> u8;
            )),
            Ok(Item::Declaration(_))
        ));
        assert!(matches!(
            item(quote!(
                struct S;
            )),
            Ok(Item::Other(_, "a struct"))
        ));
    }
}
