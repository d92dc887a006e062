//! `#[derive(ConnectorError)]`: parse -> validate -> expand.

mod expand;
mod parse;
mod validate;

use proc_macro2::TokenStream;
use quote::quote;

use crate::diag::Errors;

/// The derive's entry point. On any error it emits the errors plus a stub impl, so that the
/// mistake does not cascade into "does not classify" errors wherever the type is used.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let derive: syn::DeriveInput = match syn::parse2(input) {
        Ok(derive) => derive,
        Err(e) => return e.into_compile_error(),
    };
    let mut errors = Errors::new();
    if let syn::Data::Union(u) = &derive.data {
        errors.error(
            u.union_token.span,
            "`#[derive(ConnectorError)]` applies to an enum or a struct, not to a union; classify an error enum's variants, e.g. `#[connector(transient)]`, or give a struct its class",
        );
        return errors.into_compile_errors();
    }
    let validated = match parse::input(&derive) {
        Ok(parsed) => validate::validate(parsed, errors),
        Err(e) => {
            errors.darling(e);
            Err(errors)
        }
    };
    match validated {
        Ok(model) => expand::expand(&model),
        Err(errors) => {
            let stub = expand::stub(&derive, expand::mentions_rejected(&derive));
            let errors = errors.into_compile_errors();
            quote!(#errors #stub)
        }
    }
}
