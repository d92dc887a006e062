//! Diagnostics shared by both macros: error collection, darling's messages in the house style,
//! and "did you mean" suggestions.

use proc_macro2::{Group, Span, TokenStream, TokenTree};

/// Collects every error of one macro invocation so that a user sees all of them in one build.
#[derive(Default)]
pub(crate) struct Errors {
    errors: Vec<syn::Error>,
}

impl Errors {
    pub(crate) fn new() -> Self {
        Errors::default()
    }

    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Span, message: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, message));
    }

    /// Records an error that underlines all of `tokens` (first to last token).
    pub(crate) fn spanned(
        &mut self,
        tokens: impl quote::ToTokens,
        message: impl std::fmt::Display,
    ) {
        self.errors.push(syn::Error::new_spanned(tokens, message));
    }

    /// Records a `syn` error as is.
    pub(crate) fn syn(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// Records darling's errors, reworded to the house style (lowercase, "key" rather than
    /// "field", the fix after a semicolon).
    pub(crate) fn darling(&mut self, error: darling::Error) {
        for single in error.flatten() {
            // The key the error is about: darling's location path, the last part of its text.
            let full = single.to_string();
            let key = full
                .rsplit_once(" at ")
                .map(|(_, at)| at.rsplit('/').next().unwrap_or(at).to_owned());
            // `syn::Error::from` drops darling's location path when the error has a span, the
            // same way `write_errors` does.
            let converted = syn::Error::from(single);
            let polished = polish(&converted.to_string());
            let message = key
                .and_then(|key| what_to_write(&key, &polished))
                .unwrap_or(polished);
            self.errors.push(syn::Error::new(converted.span(), message));
        }
    }

    /// Runs `result`, recording its error and returning its value.
    pub(crate) fn handle<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.syn(error);
                None
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors as `compile_error!` invocations, through `syn::Error`.
    pub(crate) fn into_compile_errors(self) -> TokenStream {
        self.errors
            .into_iter()
            .map(|e| e.into_compile_error())
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn messages(&self) -> Vec<String> {
        self.errors.iter().map(ToString::to_string).collect()
    }
}

/// Rewrites one of darling's built-in messages ("Unknown field: `x`. Did you mean `y`?") in the
/// house style ("unknown key `x`; did you mean `y`?").
pub(crate) fn polish(message: &str) -> String {
    let replaced = message
        .replace("Unknown field: ", "unknown key ")
        .replace("Duplicate field ", "duplicate key ")
        .replace("Missing field ", "missing key ")
        .replace("Unknown literal value ", "unknown value ")
        .replace("Unknown value: ", "unknown value ")
        .replace(
            "Unexpected meta-item format `word`",
            "this key needs a value",
        )
        .replace(
            "Unexpected meta-item format `list`",
            "this key does not take a list",
        )
        .replace(
            "Unexpected meta-item format `non-word`",
            "this key is a flag and takes no value",
        )
        .replace(
            "Unexpected meta-item format `name-value`",
            "this key does not take `= value`",
        )
        .replace("Unexpected literal type ", "unexpected literal of type ")
        .replace("Unexpected type ", "unexpected value of type ")
        .replace(". Did you mean ", "; did you mean ")
        .replace(". Available values: ", "; expected one of ");
    let mut out = lowercase_first(&replaced);
    if out.starts_with("duplicate key") {
        out.push_str("; each key may appear once, remove the repeated one");
    }
    out
}

/// darling's message about a value of the wrong kind (`unexpected value of type `int``, a flag
/// given a value, a key without one) rewritten to say what to write for the key, when the key is
/// known; `None` leaves the message as it is.
fn what_to_write(key: &str, message: &str) -> Option<String> {
    const GENERIC: [&str; 5] = [
        "unexpected value of type",
        "unexpected literal of type",
        "this key is a flag and takes no value",
        "this key needs a value",
        "this key does not take",
    ];
    if !GENERIC.iter().any(|g| message.starts_with(g)) {
        return None;
    }
    let named = |what: &str, example: &str| format!("`{key}` {what}: write `{key} = {example}`");
    let text = match key {
        "retries" => named("is a whole number from 0 to 20", "3"),
        "jitter" => named(
            "takes the jitter's kind as a string (`none`, `full`, `equal`, `decorrelated`, `proportional`)",
            "\"full\"",
        ),
        "breaker" => format!(
            "{}; sites with the same name share one breaker",
            named("takes the breaker's name as a string", "\"graph\"")
        ),
        "rate_limit" => format!(
            "{}; its rate is configured, e.g. `[rate_limits.graph] rate = 100`",
            named("takes the limiter's name as a string", "\"graph\"")
        ),
        "bulkhead" => format!(
            "{}; its size is configured, e.g. `[bulkheads.graph] max_concurrent = 8`",
            named("takes the bulkhead's name as a string", "\"graph\"")
        ),
        "retry_on" | "abort_on" => {
            named("takes a list of error variants", "[GraphError::Conflict]")
        }
        "fallback" => named("takes the path of a fn, not a string", "cached_devices"),
        "refresh" => named(
            "takes the path of the hook, not a string",
            "Self::refresh_token",
        ),
        "breaker_key" => named("takes the expression of the key", "self.tenant.as_str()"),
        "idempotency_key" => named("takes the expression of the key", "request.id"),
        "terminal" => named("takes the reason as a string", "\"license_exhausted\""),
        "status" => named("names the field holding the HTTP status", "status"),
        "default" => named("takes the class of unmarked variants", "\"permanent\""),
        "idempotent" | "sensitive_key" => {
            format!("`{key}` is a flag and takes no value: write `{key}` alone, or remove it")
        }
        "transient" | "throttled" | "permanent" | "policy" | "auth" | "delegate" | "rejected"
        | "retry_after" | "verdict" | "secret" => {
            format!("`{key}` is a flag and takes no value: write `#[connector({key})]`")
        }
        _ => return None,
    };
    Some(text)
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The candidate closest to `input`, if one is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (input.len() / 3).max(1);
    candidates
        .iter()
        .map(|c| (levenshtein(input, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "did you mean `x`? (accepted: ...)" or, without a close candidate, the accepted values.
pub(crate) fn suggestion(input: &str, candidates: &[&str]) -> String {
    match did_you_mean(input, candidates) {
        Some(best) => format!(
            "did you mean `{best}`? (accepted: {})",
            backticked(candidates)
        ),
        None => format!("expected one of {}", backticked(candidates)),
    }
}

/// `tokens` with every span set to `span`, so that an error in generated code that names them
/// points at the user's token (a return type, an argument, a field) rather than at the macro.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                TokenTree::Group(group)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// "`a`, `b`, `c`".
pub(crate) fn backticked<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let deletion = prev
                .get(j + 1)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let insertion = cur.last().copied().unwrap_or(usize::MAX).saturating_add(1);
            let substitution = prev
                .get(j)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(cost);
            cur.push(deletion.min(insertion).min(substitution));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polishes_darling_messages() {
        assert_eq!(
            polish("Unknown field: `retires`. Did you mean `retries`?"),
            "unknown key `retires`; did you mean `retries`?"
        );
        assert_eq!(
            polish("Duplicate field `timeout`"),
            "duplicate key `timeout`; each key may appear once, remove the repeated one"
        );
    }

    #[test]
    fn a_value_of_the_wrong_kind_says_what_to_write_for_its_key() {
        assert_eq!(
            what_to_write("bulkhead", "unexpected value of type `int`").as_deref(),
            Some(
                "`bulkhead` takes the bulkhead's name as a string: write `bulkhead = \"graph\"`; its size is configured, e.g. `[bulkheads.graph] max_concurrent = 8`"
            )
        );
        assert_eq!(
            what_to_write("idempotent", "unexpected value of type `bool`").as_deref(),
            Some(
                "`idempotent` is a flag and takes no value: write `idempotent` alone, or remove it"
            )
        );
        assert_eq!(what_to_write("retries", "unknown key `x`"), None);
        assert_eq!(
            what_to_write("unheard_of", "unexpected value of type `int`"),
            None
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let kinds = ["none", "full", "equal", "decorrelated", "proportional"];
        assert_eq!(did_you_mean("ful", &kinds), Some("full"));
        assert_eq!(did_you_mean("decorelated", &kinds), Some("decorrelated"));
        assert_eq!(did_you_mean("banana", &kinds), None);
        assert_eq!(
            suggestion("banana", &["a", "b"]),
            "expected one of `a`, `b`"
        );
    }
}
