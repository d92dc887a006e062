//! Durations written as string literals with units (`"250ms"`, `"2s"`, `"1m"`), parsed at
//! compile time.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::quote;

/// The longest duration a policy accepts: one day. Anything longer is a typo, and the bound keeps
/// the compile-time schedule arithmetic far from overflow.
pub(crate) const MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses the literal of `key`, with a message in the house style on failure.
pub(crate) fn parse(key: &str, lit: &syn::LitStr) -> syn::Result<Duration> {
    let text = lit.value();
    let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!(
                "`{key} = \"{text}\"` is not a duration ({e}); write a number with a unit, e.g. `\"250ms\"`, `\"2s\"` or `\"1m\"`",
                e = lowercase(&e.to_string())
            ),
        )
    })?;
    if parsed.is_zero() {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{key}` must be longer than zero; write e.g. `{key} = \"1s\"` or remove it"),
        ));
    }
    if parsed > MAX {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "`{key} = \"{text}\"` is longer than the limit of one day; use a shorter duration"
            ),
        ));
    }
    Ok(parsed)
}

/// A duration the way humans read it (`"1m 30s"`).
pub(crate) fn display(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `Duration::new(secs, nanos)` through the given `__private` path.
pub(crate) fn tokens(private: &TokenStream, d: Duration) -> TokenStream {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    quote!(#private::Duration::new(#secs, #nanos))
}

fn lowercase(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    #[test]
    fn parses_units() {
        let lit: syn::LitStr = parse_quote!("250ms");
        assert_eq!(
            parse("timeout", &lit).ok(),
            Some(Duration::from_millis(250))
        );
        let lit: syn::LitStr = parse_quote!("1m");
        assert_eq!(parse("timeout", &lit).ok(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn rejects_zero_garbage_and_huge() {
        for bad in ["0s", "ten seconds", "10", "2d"] {
            let lit: syn::LitStr = syn::LitStr::new(bad, proc_macro2::Span::call_site());
            assert!(parse("timeout", &lit).is_err(), "{bad}");
        }
    }
}
