//! `#[dojjail::host]`: turns `fn name(a: A, b: B) -> R` into a value `name` implementing
//! `Entrypoint<Args = (A, B), Output = R>`, registered under `module_path!()::name`.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            let error = syn::Error::new(
                Span::call_site(),
                "#[dojjail::host] applies to a function: `fn name(args...) -> T { ... }`",
            );
            return with_error(item, error);
        }
    };
    if !args.is_empty() {
        let error = syn::Error::new_spanned(&args, "#[dojjail::host] takes no arguments");
        return with_error(quote!(#function), error);
    }
    match expand_fn(&function) {
        Ok(tokens) => tokens,
        Err(error) => with_error(quote!(#function), error),
    }
}

/// Keeps the user's item so IDEs and later errors stay useful, plus the error.
fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

fn expand_fn(function: &ItemFn) -> syn::Result<TokenStream> {
    let signature = &function.sig;
    if let Some(asyncness) = &signature.asyncness {
        return Err(syn::Error::new_spanned(
            asyncness,
            "a #[dojjail::host] entrypoint cannot be async; build a runtime inside it, e.g. \
             tokio::runtime::Runtime::new().unwrap().block_on(async { ... })",
        ));
    }
    if !signature.generics.params.is_empty() || signature.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &signature.generics,
            "a #[dojjail::host] entrypoint cannot be generic: it is looked up by name at run time",
        ));
    }
    let mut types = Vec::new();
    for input in &signature.inputs {
        match input {
            FnArg::Typed(typed) => types.push((*typed.ty).clone()),
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    "a #[dojjail::host] entrypoint is a free function; it cannot take self",
                ));
            }
        }
    }
    let name = &signature.ident;
    let vis = &function.vis;
    let attrs = &function.attrs;
    let inputs = &signature.inputs;
    let body = &function.block;
    let output = match &signature.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => quote!(#ty),
    };
    let idents: Vec<_> = (0..types.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    let private = quote!(::dojjail::__private);
    let json = quote!(#private::serde_json);
    let registered_name = quote!(::core::concat!(
        ::core::module_path!(),
        "::",
        ::core::stringify!(#name)
    ));
    let span = name.span();
    let output_bound = quote_spanned! {signature.output.span()=>
        const _: fn() = || {
            fn __dojjail_returns_serializable<T: #private::Entrypoint>() {}
            __dojjail_returns_serializable::<#name>();
        };
    };
    Ok(quote_spanned! {span=>
        #(#attrs)*
        #[allow(non_camel_case_types)]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug)]
        #vis struct #name;

        impl #name {
            /// Calls the entrypoint's function directly, in this process.
            #[allow(clippy::too_many_arguments)]
            #vis fn call(self, #inputs) -> #output #body
        }

        impl #private::Entrypoint for #name {
            type Args = (#(#types,)*);
            type Output = #output;
            const NAME: &'static str = #registered_name;
        }

        #output_bound

        #private::inventory::submit! {
            #private::EntrypointRegistration {
                name: #registered_name,
                run: {
                    fn __dojjail_run(
                        args: #json::Value,
                    ) -> ::core::result::Result<#json::Value, #private::String> {
                        let (#(#idents,)*): (#(#types,)*) = #json::from_value(args)
                            .map_err(|e| #private::ToString::to_string(&e))?;
                        #json::to_value(#name.call(#(#idents),*))
                            .map_err(|e| #private::ToString::to_string(&e))
                    }
                    __dojjail_run
                },
            }
        }
    })
}
