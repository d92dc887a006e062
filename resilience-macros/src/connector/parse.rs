//! Parse: `#[connector(...)]` on the type, its variants and fields (darling), each value kept
//! with its span. Nothing is checked here beyond the syntax.

use darling::util::Flag;
use darling::{FromDeriveInput, FromField, FromMeta, FromVariant};
use proc_macro2::Span;
use syn::spanned::Spanned;

/// The derive's input.
#[derive(FromDeriveInput)]
#[darling(attributes(connector), supports(struct_any, enum_any))]
pub(crate) struct Input {
    pub(crate) ident: syn::Ident,
    pub(crate) generics: syn::Generics,
    pub(crate) data: darling::ast::Data<Variant, Field>,
    /// The class of a struct (on an enum, an error: classify the variants).
    #[darling(flatten)]
    pub(crate) class: ClassArgs,
    /// The class of an enum's unmarked variants.
    #[darling(default)]
    pub(crate) default: Option<Word>,
    #[darling(default, rename = "crate")]
    pub(crate) krate: Option<syn::Path>,
}

/// One variant of an enum.
#[derive(FromVariant)]
#[darling(attributes(connector))]
pub(crate) struct Variant {
    pub(crate) ident: syn::Ident,
    pub(crate) fields: darling::ast::Fields<Field>,
    #[darling(flatten)]
    pub(crate) class: ClassArgs,
}

/// The classification keys, on a variant or on a struct.
#[derive(Default, FromMeta)]
#[darling(default)]
pub(crate) struct ClassArgs {
    pub(crate) transient: Flag,
    pub(crate) throttled: Flag,
    pub(crate) permanent: Flag,
    pub(crate) policy: Flag,
    pub(crate) auth: Flag,
    pub(crate) terminal: Option<syn::LitStr>,
    pub(crate) status: Option<FieldRef>,
    pub(crate) delegate: Flag,
    pub(crate) rejected: Flag,
    pub(crate) code: Option<Code>,
    /// How the circuit breaker counts the variant: `"failure"`, `"success"` or `"ignored"`.
    pub(crate) breaker: Option<OutcomeWord>,
}

/// One field of a variant or struct.
#[derive(FromField)]
#[darling(attributes(connector))]
pub(crate) struct Field {
    pub(crate) ident: Option<syn::Ident>,
    pub(crate) ty: syn::Type,
    pub(crate) retry_after: Flag,
    /// The field holds an `http::Verdict`: the variant's class and wait hint.
    pub(crate) verdict: Flag,
    /// The field holds a secret: its type must print `[redacted]`.
    pub(crate) secret: Flag,
}

/// A field named in an attribute: `status = code` or, in a tuple variant, `status = 0`.
pub(crate) struct FieldRef {
    pub(crate) member: syn::Member,
    pub(crate) span: Span,
}

impl FromMeta for FieldRef {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        let member = match expr {
            syn::Expr::Path(p) if p.qself.is_none() => {
                p.path.get_ident().cloned().map(syn::Member::Named)
            }
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(i),
                ..
            }) => i.base10_parse::<u32>().ok().map(|index| {
                syn::Member::Unnamed(syn::Index {
                    index,
                    span: i.span(),
                })
            }),
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => s.parse::<syn::Ident>().ok().map(syn::Member::Named),
            syn::Expr::Group(g) => return Self::from_expr(&g.expr),
            _ => None,
        };
        match member {
            Some(member) => Ok(FieldRef {
                member,
                span: expr.span(),
            }),
            None => Err(darling::Error::custom(
                "name a field of this variant, e.g. `status = status`, or `status = 0` in a tuple variant",
            )
            .with_span(expr)),
        }
    }
}

/// `code = "429"`: a string. A number or a bare word is refused with what to write, spanned on
/// the value (darling's own message names only the literal's type).
pub(crate) struct Code(pub(crate) syn::LitStr);

impl FromMeta for Code {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        let text = match expr {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => return Ok(Code(s.clone())),
            syn::Expr::Group(g) => return Self::from_expr(&g.expr),
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Int(i),
                ..
            }) => i.base10_digits().to_owned(),
            syn::Expr::Path(p) if p.qself.is_none() && p.path.get_ident().is_some() => p
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default(),
            _ => "429".to_owned(),
        };
        Err(darling::Error::custom(format!(
            "`code` is text for logs, metrics and events: write `code = \"{text}\"`"
        ))
        .with_span(expr))
    }
}

/// A bare word or a string: `default = permanent` or `default = "permanent"`.
pub(crate) struct Word {
    pub(crate) value: String,
    pub(crate) span: Span,
}

impl FromMeta for Word {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        let (value, span) = word_of(expr).ok_or_else(|| {
            darling::Error::custom("write a class, e.g. `default = \"permanent\"`").with_span(expr)
        })?;
        Ok(Word { value, span })
    }
}

/// The text of a bare word or a string literal (through macro-made invisible groups), and its
/// span; `None` for anything else.
fn word_of(expr: &syn::Expr) -> Option<(String, Span)> {
    match expr {
        syn::Expr::Path(p) if p.qself.is_none() => {
            p.path.get_ident().map(|i| (i.to_string(), expr.span()))
        }
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Some((s.value(), expr.span())),
        syn::Expr::Group(g) => word_of(&g.expr),
        _ => None,
    }
}

/// The value of `breaker = ...` on a variant: a string or a bare word, `breaker = "ignored"` or
/// `breaker = ignored`. Which words are known is for validation to say.
pub(crate) struct OutcomeWord {
    pub(crate) value: String,
    pub(crate) span: Span,
}

impl FromMeta for OutcomeWord {
    fn from_expr(expr: &syn::Expr) -> darling::Result<Self> {
        let (value, span) = word_of(expr).ok_or_else(|| {
            darling::Error::custom(
                "write how the circuit breaker counts this variant: `breaker = \"failure\"`, `breaker = \"success\"` or `breaker = \"ignored\"`",
            )
            .with_span(expr)
        })?;
        Ok(OutcomeWord { value, span })
    }
}

/// Parses the derive's input.
pub(crate) fn input(input: &syn::DeriveInput) -> darling::Result<Input> {
    Input::from_derive_input(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: proc_macro2::TokenStream) -> darling::Result<Input> {
        let derive: syn::DeriveInput = syn::parse2(tokens).map_err(darling::Error::from)?;
        input(&derive)
    }

    #[test]
    fn parses_variants_and_fields() {
        let parsed = parse(quote! {
            #[connector(default = permanent)]
            enum E {
                #[connector(transient, code = "429")]
                A { #[connector(retry_after)] wait: Option<Duration> },
                #[connector(status = 0)]
                B(u16),
                #[connector(rejected)]
                C(Rejected),
                #[connector(throttled, breaker = "ignored")]
                D,
                E(#[connector(verdict)] Verdict),
            }
        });
        assert!(parsed.is_ok(), "did not parse");
        let Ok(parsed) = parsed else { return };
        assert_eq!(
            parsed.default.map(|w| w.value).as_deref(),
            Some("permanent")
        );
        let variants = parsed.data.take_enum().unwrap_or_default();
        assert_eq!(variants.len(), 5);
        assert!(variants.iter().any(|v| v.class.rejected.is_present()));
        assert!(variants.iter().any(|v| v.class.throttled.is_present()
            && v.class.breaker.as_ref().map(|w| w.value.as_str()) == Some("ignored")));
        assert!(
            variants
                .iter()
                .any(|v| v.fields.iter().any(|f| f.verdict.is_present()))
        );
    }

    #[test]
    fn unknown_keys_fail() {
        assert!(
            parse(quote!(
                enum E {
                    #[connector(transiant)]
                    A,
                }
            ))
            .is_err()
        );
    }
}
