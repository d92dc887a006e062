//! `#[resilient(...)]`: parse -> validate -> expand.

mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;

use crate::diag::Errors;

/// The attribute's entry point. Always emits the user's item: unchanged with the errors when
/// anything is wrong, so that one mistake does not cascade into errors at every caller.
pub(crate) fn resilient(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::new();
    let args = parse::args(args).unwrap_or_else(|e| {
        errors.darling(e);
        parse::Args::default()
    });
    let item_fn = match parse::item(item.clone()) {
        Ok(parse::Item::Fn(f)) => f,
        Ok(parse::Item::Declaration(f)) => {
            errors.error(
                f.sig.fn_token.span,
                format!(
                    "`#[resilient]` needs a fn body: put it on `{}` in the impl, not on the declaration in the trait",
                    f.sig.ident
                ),
            );
            return with_errors(item, errors);
        }
        Ok(parse::Item::Other(span, what)) => {
            errors.error(
                span,
                format!("`#[resilient]` applies to fns only, not to {what}; put it on a fn that returns `Result<T, E>`"),
            );
            return with_errors(item, errors);
        }
        Err(e) => {
            errors.syn(e);
            return with_errors(item, errors);
        }
    };
    match validate::validate(args, &item_fn, errors) {
        Ok(config) => expand::expand(&config, item_fn),
        Err(errors) => with_errors(item, errors),
    }
}

fn with_errors(item: TokenStream, errors: Errors) -> TokenStream {
    let errors = errors.into_compile_errors();
    quote!(#item #errors)
}
