//! Durations written as string literals with units (`"250ms"`, `"2s"`, `"1m"`), parsed at
//! compile time.

use std::time::Duration;

use proc_macro2::TokenStream;
use quote::quote;

/// Parses the literal of `key`, with a message in the house style on failure, and checks it
/// against the policy's bounds (1 ms to 30 days), the same the configuration file is held to.
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
    resilience_policy::check_duration(key, parsed)
        .map_err(|violation| syn::Error::new(lit.span(), violation.written_as(&text)))?;
    Ok(parsed)
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
    fn rejects_zero_garbage_tiny_and_huge() {
        for bad in ["0s", "ten seconds", "10", "999us", "31days", "600years"] {
            let lit: syn::LitStr = syn::LitStr::new(bad, proc_macro2::Span::call_site());
            assert!(parse("timeout", &lit).is_err(), "{bad}");
        }
        for good in ["1ms", "30days"] {
            let lit: syn::LitStr = syn::LitStr::new(good, proc_macro2::Span::call_site());
            assert!(parse("timeout", &lit).is_ok(), "{good}");
        }
    }

    /// The policy's messages show durations the way humantime does, so the text is the same
    /// whichever crate writes it.
    #[test]
    fn the_policy_formats_durations_as_humantime_does() {
        let mut d = Duration::new(0, 1);
        while d < Duration::from_secs(1 << 40) {
            for delta in [
                Duration::ZERO,
                Duration::new(0, 7),
                Duration::new(59, 999_000),
            ] {
                let d = d + delta;
                assert_eq!(
                    resilience_policy::format_duration(d),
                    humantime::format_duration(d).to_string(),
                    "{d:?}"
                );
            }
            d = d * 3 + Duration::new(1, 1);
        }
        for d in [
            Duration::ZERO,
            Duration::MAX,
            Duration::from_secs(31 * 86_400),
        ] {
            assert_eq!(
                resilience_policy::format_duration(d),
                humantime::format_duration(d).to_string()
            );
        }
    }
}
