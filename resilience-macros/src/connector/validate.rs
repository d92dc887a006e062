//! Validate: the parsed derive input in, a finished [`Model`] out, with one class per variant.
//!
//! One `check_*` function per rule; every rule runs, so a user sees every mistake in one build.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::spanned::Spanned;

use super::parse::{ClassArgs, Field, Input, Word};
use crate::diag::{Errors, backticked, suggestion};

/// The terminal reasons the runtime knows, with their `TerminalReason` variants.
const TERMINAL_REASONS: [(&str, &str); 5] = [
    ("user_not_provisionable", "UserNotProvisionable"),
    ("target_managed_externally", "TargetManagedExternally"),
    ("license_exhausted", "LicenseExhausted"),
    ("validation_failure", "ValidationFailure"),
    ("operation_not_permitted", "OperationNotPermitted"),
];

const CLASS_WORDS: [&str; 5] = ["transient", "throttled", "permanent", "policy", "auth"];

/// The values of `breaker = "..."` on a variant, with their `Outcome` variants.
const BREAKER_OUTCOMES: [(&str, &str); 3] = [
    ("failure", "Failure"),
    ("success", "Success"),
    ("ignored", "Ignored"),
];

/// The finished derive.
pub(crate) struct Model {
    pub(crate) krate: TokenStream,
    pub(crate) ident: syn::Ident,
    pub(crate) generics: syn::Generics,
    /// `true` for an enum: patterns are `Self::Variant { .. }`.
    pub(crate) is_enum: bool,
    pub(crate) variants: Vec<VariantModel>,
}

/// One variant (or the struct itself), fully classified.
pub(crate) struct VariantModel {
    /// `None` for a struct.
    pub(crate) ident: Option<syn::Ident>,
    pub(crate) class: Class,
    pub(crate) code: Option<syn::LitStr>,
    /// The field marked `#[connector(retry_after)]`, with its type's span.
    pub(crate) retry_after: Option<(syn::Member, Span)>,
    /// The types of the fields marked `#[connector(secret)]`.
    pub(crate) secrets: Vec<syn::Type>,
    /// How the breaker counts the variant (`breaker = "..."`), by the name of its `Outcome`
    /// variant; `None` leaves it to the class.
    pub(crate) breaker: Option<&'static str>,
}

/// Where a variant's class comes from.
pub(crate) enum Class {
    /// A fixed class, by the name of its `ErrorClass` variant.
    Fixed(&'static str),
    /// A terminal reason, by the name of its `TerminalReason` variant and its string.
    Terminal(&'static str, &'static str),
    /// The HTTP status in a field; the span is the field's type.
    Status(syn::Member, Span),
    /// The `Classify` impl of the single field.
    Delegate(syn::Member, syn::Type),
    /// The runtime's `Rejected`, in the single field.
    Rejected(syn::Member, syn::Type),
    /// The `http::Verdict` in a field marked `verdict`; the span is the field's type.
    Verdict(syn::Member, Span),
}

impl Model {
    /// The rejected variant, if there is one.
    pub(crate) fn rejected(&self) -> Option<(&VariantModel, &syn::Member, &syn::Type)> {
        self.variants.iter().find_map(|v| match &v.class {
            Class::Rejected(member, ty) => Some((v, member, ty)),
            _ => None,
        })
    }
}

/// Turns the parsed input into a finished model, or every error found.
pub(crate) fn validate(input: Input, mut errors: Errors) -> Result<Model, Errors> {
    let krate = match &input.krate {
        Some(path) => path.to_token_stream(),
        None => quote!(::resilience_runtime),
    };
    let ident = input.ident;
    let generics = input.generics;
    let (is_enum, variants) = match input.data {
        darling::ast::Data::Enum(variants) => {
            check_enum_level_class(&input.class, &ident.to_string(), &mut errors);
            let default = check_default(input.default.as_ref(), &mut errors);
            let mut unclassified = Vec::new();
            let mut models = Vec::new();
            for v in variants {
                let name = v.ident.to_string();
                match check_variant(&v.class, &v.fields.fields, &name, &mut errors) {
                    Checked::Class(class) => models.push(model(
                        Some(v.ident),
                        *class,
                        &v.class,
                        &v.fields.fields,
                        &mut errors,
                    )),
                    Checked::Unclassified => match default {
                        Some(d) => models.push(model(
                            Some(v.ident),
                            Class::Fixed(d),
                            &v.class,
                            &v.fields.fields,
                            &mut errors,
                        )),
                        None => unclassified.push(v.ident.clone()),
                    },
                    Checked::Invalid => {}
                }
            }
            check_all_classified(&ident, &unclassified, &mut errors);
            check_one_rejected(&models, &mut errors);
            (true, models)
        }
        darling::ast::Data::Struct(fields) => {
            if let Some(d) = &input.default {
                errors.error(
                    d.span,
                    "`default` is for enums; on a struct write its class directly, e.g. `#[connector(transient)]`",
                );
            }
            let name = ident.to_string();
            let mut models = Vec::new();
            match check_variant(&input.class, &fields.fields, &name, &mut errors) {
                Checked::Class(class) => models.push(model(None, *class, &input.class, &fields.fields, &mut errors)),
                Checked::Unclassified => errors.error(
                    ident.span(),
                    format!(
                        "`{name}` has no class; add one of `#[connector(transient)]`, `#[connector(throttled)]`, `#[connector(permanent)]`, `#[connector(policy)]`, `#[connector(auth)]`, `#[connector(terminal = \"...\")]`, `#[connector(status = field)]` or `#[connector(delegate)]`, or mark an `http::Verdict` field `#[connector(verdict)]`"
                    ),
                ),
                Checked::Invalid => {}
            }
            (false, models)
        }
    };
    if errors.is_empty() {
        Ok(Model {
            krate,
            ident,
            generics,
            is_enum,
            variants,
        })
    } else {
        Err(errors)
    }
}

enum Checked {
    Class(Box<Class>),
    Unclassified,
    Invalid,
}

/// On an enum, the class keys belong on the variants.
fn check_enum_level_class(class: &ClassArgs, name: &str, errors: &mut Errors) {
    if let Some((key, span)) = class_keys(class).into_iter().next() {
        errors.error(
            span,
            format!(
                "`{key}` on the enum `{name}` does not classify its variants; put it on each variant, or write `#[connector(default = \"{}\")]` for the unmarked ones",
                if CLASS_WORDS.contains(&key) { key } else { "permanent" }
            ),
        );
    }
    if let Some(code) = &class.code {
        errors.error(
            code.0.span(),
            "`code` on an enum has no effect; put it on a variant",
        );
    }
    if let Some(breaker) = &class.breaker {
        errors.error(
            breaker.span,
            format!(
                "`breaker` on the enum `{name}` has no effect; put it on the variants the breaker should count apart from their class, e.g. `#[connector(transient, breaker = \"ignored\")]`"
            ),
        );
    }
}

fn check_default(default: Option<&Word>, errors: &mut Errors) -> Option<&'static str> {
    let word = default?;
    match class_of_word(&word.value) {
        Some(class) => Some(class),
        None => {
            errors.error(
                word.span,
                format!(
                    "unknown class `{}`; {}",
                    word.value,
                    suggestion(&word.value, &CLASS_WORDS)
                ),
            );
            None
        }
    }
}

fn class_of_word(word: &str) -> Option<&'static str> {
    match word {
        "transient" => Some("Transient"),
        "throttled" => Some("Throttled"),
        "permanent" => Some("Permanent"),
        "policy" => Some("PolicyViolation"),
        "auth" => Some("Auth"),
        _ => None,
    }
}

/// The class keys present, in a fixed order.
fn class_keys(class: &ClassArgs) -> Vec<(&'static str, Span)> {
    let mut keys = Vec::new();
    for (key, flag) in [
        ("transient", &class.transient),
        ("throttled", &class.throttled),
        ("permanent", &class.permanent),
        ("policy", &class.policy),
        ("auth", &class.auth),
        ("delegate", &class.delegate),
        ("rejected", &class.rejected),
    ] {
        if flag.is_present() {
            keys.push((key, flag.span()));
        }
    }
    if let Some(t) = &class.terminal {
        keys.push(("terminal", t.span()));
    }
    if let Some(s) = &class.status {
        keys.push(("status", s.span));
    }
    keys
}

/// Exactly one class per variant, each well-formed.
fn check_variant(class: &ClassArgs, fields: &[Field], name: &str, errors: &mut Errors) -> Checked {
    let keys = class_keys(class);
    if let Some(verdict) = check_verdict(&keys, fields, name, errors) {
        return verdict;
    }
    let mut iter = keys.iter();
    let Some((first, _)) = iter.next() else {
        return Checked::Unclassified;
    };
    let mut ok = true;
    for (key, span) in iter {
        errors.error(*span, two_classes(name, first, key));
        ok = false;
    }
    let class = match *first {
        "transient" => Some(Class::Fixed("Transient")),
        "throttled" => Some(Class::Fixed("Throttled")),
        "permanent" => Some(Class::Fixed("Permanent")),
        "policy" => Some(Class::Fixed("PolicyViolation")),
        "auth" => Some(Class::Fixed("Auth")),
        "terminal" => check_terminal(class, errors),
        "status" => check_status(class, fields, name, errors),
        "delegate" => check_single_field("delegate", class.delegate.span(), fields, name, errors)
            .map(|(member, ty)| Class::Delegate(member, ty)),
        "rejected" => check_single_field("rejected", class.rejected.span(), fields, name, errors)
            .map(|(member, ty)| Class::Rejected(member, ty)),
        _ => None,
    };
    match class {
        Some(class) if ok => Checked::Class(Box::new(class)),
        _ => Checked::Invalid,
    }
}

/// The message for a second class key on one variant.
fn two_classes(name: &str, first: &str, second: &str) -> String {
    let mut message = format!("`{name}` has two classes, `{first}` and `{second}`; keep one");
    if first == "throttled" || second == "throttled" {
        let other = if first == "throttled" { second } else { first };
        message.push_str(&format!(
            ": `throttled` is retried after the server's hint and never counts for the breaker; to count a variant of another class apart from it, keep `{other}` and add `breaker = \"ignored\"`"
        ));
    }
    message
}

/// A field marked `verdict` classifies its variant: the only class, from one field.
/// `None` when no field is marked.
fn check_verdict(
    keys: &[(&'static str, Span)],
    fields: &[Field],
    name: &str,
    errors: &mut Errors,
) -> Option<Checked> {
    let mut marked = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.verdict.is_present());
    let (index, field) = marked.next()?;
    let mut ok = true;
    for (_, extra) in marked {
        errors.error(
            extra.verdict.span(),
            format!(
                "`{name}` has two `verdict` fields; keep `#[connector(verdict)]` on the one that holds the response's `http::Verdict`"
            ),
        );
        ok = false;
    }
    let field_name = match &field.ident {
        Some(ident) => ident.to_string(),
        None => index.to_string(),
    };
    for (key, span) in keys {
        errors.error(
            *span,
            format!(
                "`{name}` takes its class from its `verdict` field `{field_name}`; remove `{key}`, or the field's `#[connector(verdict)]`"
            ),
        );
        ok = false;
    }
    Some(if ok {
        Checked::Class(Box::new(Class::Verdict(
            member_of(field, index),
            field.ty.span(),
        )))
    } else {
        Checked::Invalid
    })
}

fn check_terminal(class: &ClassArgs, errors: &mut Errors) -> Option<Class> {
    let lit = class.terminal.as_ref()?;
    let value = lit.value();
    let found = TERMINAL_REASONS.iter().find(|(name, _)| *name == value);
    match found {
        Some((name, variant)) => Some(Class::Terminal(variant, name)),
        None => {
            let names: Vec<&str> = TERMINAL_REASONS.iter().map(|(n, _)| *n).collect();
            errors.error(
                lit.span(),
                format!(
                    "unknown terminal reason `{value}`; {}",
                    suggestion(&value, &names)
                ),
            );
            None
        }
    }
}

fn check_status(
    class: &ClassArgs,
    fields: &[Field],
    name: &str,
    errors: &mut Errors,
) -> Option<Class> {
    let status = class.status.as_ref()?;
    match find_field(fields, &status.member) {
        Some((member, field)) => Some(Class::Status(member, field.ty.span())),
        None => {
            errors.error(
                status.span,
                format!(
                    "`{name}` has no field `{}`; `status` names the field holding the HTTP status{}",
                    status.member.to_token_stream(),
                    field_list(fields)
                ),
            );
            None
        }
    }
}

fn check_single_field(
    key: &str,
    span: Span,
    fields: &[Field],
    name: &str,
    errors: &mut Errors,
) -> Option<(syn::Member, syn::Type)> {
    match fields {
        [field] => Some((member_of(field, 0), field.ty.clone())),
        _ => {
            let what = match key {
                "rejected" => {
                    "carries the runtime's `Rejected`, e.g. `Rejected(#[from] resilience_runtime::Rejected)`"
                }
                _ => "wraps one inner error that classifies, e.g. `Http(#[from] HttpError)`",
            };
            errors.error(
                span,
                format!(
                    "`{key}` needs a variant with exactly one field, but `{name}` has {}; the variant {what}",
                    fields.len()
                ),
            );
            None
        }
    }
}

fn member_of(field: &Field, index: usize) -> syn::Member {
    match &field.ident {
        Some(ident) => syn::Member::Named(ident.clone()),
        None => syn::Member::Unnamed(syn::Index {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            span: field.ty.span(),
        }),
    }
}

fn find_field<'a>(fields: &'a [Field], wanted: &syn::Member) -> Option<(syn::Member, &'a Field)> {
    fields.iter().enumerate().find_map(|(i, f)| {
        let matches = match (wanted, &f.ident) {
            (syn::Member::Named(w), Some(ident)) => w == ident,
            (syn::Member::Unnamed(w), None) => usize::try_from(w.index).ok() == Some(i),
            _ => false,
        };
        // Keep the span of the user's reference on the member.
        matches.then(|| (wanted.clone(), f))
    })
}

fn field_list(fields: &[Field]) -> String {
    let names: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| match &f.ident {
            Some(ident) => ident.to_string(),
            None => i.to_string(),
        })
        .collect();
    if names.is_empty() {
        "; this variant has no fields".to_owned()
    } else {
        format!("; its fields are {}", backticked(&names))
    }
}

/// The finished variant: its class plus `code` and `retry_after`.
fn model(
    ident: Option<syn::Ident>,
    class: Class,
    args: &ClassArgs,
    fields: &[Field],
    errors: &mut Errors,
) -> VariantModel {
    let mut retry_after = None;
    for (i, field) in fields.iter().enumerate() {
        if !field.retry_after.is_present() {
            continue;
        }
        if let Class::Verdict(member, _) = &class {
            errors.error(
                field.retry_after.span(),
                format!(
                    "the wait hint comes from the `verdict` field `{}`; remove `#[connector(retry_after)]`",
                    member.to_token_stream()
                ),
            );
            continue;
        }
        if retry_after.is_some() {
            errors.error(
                field.retry_after.span(),
                "only one field can be `retry_after`; remove the attribute from all but one",
            );
            continue;
        }
        check_retry_after_is_read(&class, field, errors);
        retry_after = Some((member_of(field, i), field.ty.span()));
    }
    let secrets = fields
        .iter()
        .filter(|f| f.secret.is_present())
        .map(|f| f.ty.clone())
        .collect();
    let breaker = check_breaker(args, &class, errors);
    VariantModel {
        ident,
        class,
        code: check_code(args, errors),
        retry_after,
        secrets,
        breaker,
    }
}

/// `breaker = "failure" | "success" | "ignored"`: how the breaker counts the variant, apart from
/// its class. Not on the `rejected` variant: the runtime decides how its rejections count.
fn check_breaker(args: &ClassArgs, class: &Class, errors: &mut Errors) -> Option<&'static str> {
    let word = args.breaker.as_ref()?;
    let value = &word.value;
    if matches!(class, Class::Rejected(..)) {
        errors.error(
            word.span,
            "`breaker` on the `rejected` variant has no effect: the runtime decides how its own rejections count (a timeout is a failure, an open circuit is not counted); remove it",
        );
        return None;
    }
    match BREAKER_OUTCOMES.iter().find(|(w, _)| w == value) {
        Some((_, outcome)) => Some(outcome),
        None => {
            let words: Vec<&str> = BREAKER_OUTCOMES.iter().map(|(w, _)| *w).collect();
            errors.error(
                word.span,
                format!(
                    "unknown breaker outcome `{value}`; {}; `breaker` says how the circuit breaker counts this variant, apart from its class",
                    suggestion(value, &words)
                ),
            );
            None
        }
    }
}

/// One error per unclassified variant, at its name: the token to mark.
fn check_all_classified(ident: &syn::Ident, unclassified: &[syn::Ident], errors: &mut Errors) {
    for variant in unclassified {
        errors.error(
            variant.span(),
            format!(
                "`{ident}::{variant}` has no class; mark it above the variant, e.g. `#[connector(permanent)]` (or `transient`, `throttled`, `policy`, `auth`, `terminal = \"...\"`, `status = field`, `delegate`, or an `http::Verdict` field `#[connector(verdict)]`), or give the enum `#[connector(default = \"permanent\")]`"
            ),
        );
    }
}

fn check_one_rejected(models: &[VariantModel], errors: &mut Errors) {
    let mut first: Option<String> = None;
    for v in models {
        let Class::Rejected(_, ty) = &v.class else {
            continue;
        };
        let name = v
            .ident
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        match &first {
            None => first = Some(name),
            Some(first) => errors.error(
                ty.span(),
                format!(
                    "only one variant can be `rejected`, but `{first}` and `{name}` both are; keep `#[connector(rejected)]` on one"
                ),
            ),
        }
    }
}

/// `code = "..."` names the error in logs, metrics and events: an empty one names nothing.
fn check_code(args: &ClassArgs, errors: &mut Errors) -> Option<syn::LitStr> {
    let code = &args.code.as_ref()?.0;
    if code.value().trim().is_empty() {
        errors.error(
            code.span(),
            "`code` is empty; write the code logs, metrics and events show, e.g. `code = \"429\"`, or remove it for the default",
        );
        return None;
    }
    Some(code.clone())
}

/// A wait hint is read only before a retry: on a variant its class never retries, it is
/// never read.
fn check_retry_after_is_read(class: &Class, field: &Field, errors: &mut Errors) {
    let what = match class {
        Class::Fixed("Permanent") => "`permanent`",
        Class::Fixed("PolicyViolation") => "`policy`",
        Class::Terminal(..) => "`terminal`",
        _ => return,
    };
    errors.error(
        field.retry_after.span(),
        format!(
            "`retry_after` is read only before a retry, and this variant is {what}, which is never retried; remove `#[connector(retry_after)]`, or classify the variant `throttled` (a 429 or 503 with `Retry-After`)"
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::parse;
    use quote::quote;

    fn errors(tokens: TokenStream) -> Vec<String> {
        let Ok(derive) = syn::parse2::<syn::DeriveInput>(tokens) else {
            return vec!["syntax".to_owned()];
        };
        match parse::input(&derive) {
            Ok(input) => validate(input, Errors::new())
                .err()
                .map(|e| e.messages())
                .unwrap_or_default(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn a_well_formed_enum_validates() {
        let errs = errors(quote! {
            enum E {
                #[connector(transient, code = "429")]
                A { #[connector(retry_after)] wait: Option<Duration> },
                #[connector(status = 0)]
                B(u16),
                #[connector(terminal = "license_exhausted")]
                C,
                #[connector(delegate)]
                D(Inner),
                #[connector(rejected)]
                R(Rejected),
            }
        });
        assert!(errs.is_empty(), "{errs:#?}");
    }

    #[test]
    fn throttled_breaker_and_verdict_validate() {
        let errs = errors(quote! {
            #[connector(default = "throttled")]
            enum E {
                #[connector(throttled, code = "429")]
                A { #[connector(retry_after)] wait: Option<Duration> },
                #[connector(transient, breaker = "ignored")]
                B,
                #[connector(permanent, breaker = "failure")]
                C,
                #[connector(code = "gh")]
                D(#[connector(verdict)] Verdict),
                #[connector(breaker = "success")]
                F,
            }
        });
        assert!(errs.is_empty(), "{errs:#?}");
    }

    #[test]
    fn reports_each_misuse_of_throttled_breaker_and_verdict() {
        let errs = errors(quote! {
            #[connector(breaker = "ignored")]
            enum E {
                #[connector(transient, throttled)]
                A,
                #[connector(transient, breaker = "faliure")]
                B,
                #[connector(rejected, breaker = "ignored")]
                R(Rejected),
                #[connector(policy)]
                V(#[connector(verdict)] Verdict),
                W(#[connector(verdict)] Verdict, #[connector(verdict)] Verdict),
                X { #[connector(verdict)] v: Verdict, #[connector(retry_after)] wait: Duration },
            }
        });
        assert_eq!(errs.len(), 7, "{errs:#?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("`breaker` on the enum `E` has no effect"))
        );
        assert!(errs.iter().any(|e| e.contains(
            "`A` has two classes, `transient` and `throttled`; keep one: `throttled` is retried"
        )));
        assert!(
            errs.iter()
                .any(|e| e.contains("unknown breaker outcome `faliure`; did you mean `failure`?"))
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("`breaker` on the `rejected` variant has no effect"))
        );
        assert!(errs.iter().any(|e| {
            e.contains("`V` takes its class from its `verdict` field `0`; remove `policy`")
        }));
        assert!(
            errs.iter()
                .any(|e| e.contains("`W` has two `verdict` fields"))
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("the wait hint comes from the `verdict` field `v`"))
        );
    }

    #[test]
    fn reports_each_unclassified_variant() {
        let errs = errors(quote!(
            enum E {
                A,
                #[connector(auth)]
                B,
                C,
            }
        ));
        assert_eq!(errs.len(), 2);
        assert!(errs[0].starts_with("`E::A` has no class"), "{errs:#?}");
        assert!(errs[1].starts_with("`E::C` has no class"), "{errs:#?}");
        assert!(
            errors(quote!(
                #[connector(default = "permanent")]
                enum E {
                    A,
                    C,
                }
            ))
            .is_empty()
        );
    }

    #[test]
    fn reports_each_mistake() {
        let errs = errors(quote! {
            enum E {
                #[connector(transient, permanent)]
                A,
                #[connector(terminal = "licence_exhausted")]
                B,
                #[connector(status = code)]
                C { status: u16 },
                #[connector(delegate)]
                D(X, Y),
                #[connector(rejected)]
                R1(Rejected),
                #[connector(rejected)]
                R2(Rejected),
            }
        });
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(errs.iter().any(|e| e.contains("two classes")));
        assert!(
            errs.iter()
                .any(|e| e.contains("did you mean `license_exhausted`"))
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("no field `code`") && e.contains("`status`"))
        );
        assert!(errs.iter().any(|e| e.contains("exactly one field")));
        assert!(
            errs.iter()
                .any(|e| e.contains("only one variant can be `rejected`"))
        );
    }
}
