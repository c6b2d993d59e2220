//! `#[dojjail::test(topology = path, timeout = "10s")]`: turns `fn name(net: &Network) { .. }`
//! into
//!
//! - a `#[test] fn name()` that libtest runs: it calls `run_test`, which runs the test in a
//!   fresh process and waits at most the timeout for it;
//! - a `TestRegistration` under `module_path!()::name`, which that fresh process finds: it
//!   builds the topology and calls the user's function (kept, with its own signature and
//!   block, inside an anonymous `const` so that two tests of a module never clash).
//!
//! The user's attributes go on the `#[test] fn` (`#[should_panic]`, `#[ignore]`, docs,
//! `#[cfg]`); `#[cfg]` also goes on the registration, and lint levels (`#[allow]`, ...) also
//! on the user's function, where the body is.

use crate::args::TestArgs;
use proc_macro2::{Group, Literal, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens, TokenStreamExt};
use syn::parse::{Parse, ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{token, Attribute, FnArg, LitStr, ReturnType, Signature, Token, Type, Visibility};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: TestFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(error) => return not_a_function(item, error),
    };
    let args = TestArgs::parse(args, Span::call_site());
    let checked = check_function(&function);
    match (args, checked) {
        (Ok(args), Ok(())) => expand_fn(&function, &args),
        (Err(mut error), Err(other)) => {
            error.combine(other);
            fn_with_error(&function, error)
        }
        (Err(error), _) | (_, Err(error)) => fn_with_error(&function, error),
    }
}

/// The user's function. Its body stays unparsed tokens: a syntax error in it is rustc's to
/// report, once, at the right place, while the test is still generated around it.
struct TestFn {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    block: Group,
}

impl Parse for TestFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        if !input.peek(token::Brace) {
            return Err(input.error("expected the function's body: `{ ... }`"));
        }
        let block = input.parse()?;
        Ok(TestFn {
            attrs,
            vis,
            sig,
            block,
        })
    }
}

impl ToTokens for TestFn {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.append_all(&self.attrs);
        self.vis.to_tokens(tokens);
        self.sig.to_tokens(tokens);
        self.block.to_tokens(tokens);
    }
}

/// Keeps the user's item so IDEs and later errors stay useful, plus the error.
fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#item #error)
}

const NOT_A_FUNCTION: &str =
    "#[dojjail::test] applies to a function: `fn name(net: &dojjail::Network) { ... }`";

/// An item that is not a function gets an error at its keyword (`struct`, ...); a function
/// whose signature syn cannot parse keeps syn's error.
fn not_a_function(item: TokenStream, parse_error: syn::Error) -> TokenStream {
    let head = |input: ParseStream| {
        input.call(Attribute::parse_outer)?;
        input.parse::<Visibility>()?;
        let keyword = input.span();
        let qualifiers = input.fork();
        while qualifiers.peek(Token![const])
            || qualifiers.peek(Token![async])
            || qualifiers.peek(Token![unsafe])
            || qualifiers.peek(Token![extern])
            || qualifiers.peek(LitStr)
        {
            qualifiers.parse::<TokenTree>()?;
        }
        let is_fn = qualifiers.peek(Token![fn]);
        input.parse::<TokenStream>()?;
        Ok((keyword, is_fn))
    };
    let error = match head.parse2(item.clone()) {
        Ok((_, true)) => parse_error,
        Ok((keyword, false)) => syn::Error::new(keyword, NOT_A_FUNCTION),
        Err(_) => syn::Error::new(Span::call_site(), NOT_A_FUNCTION),
    };
    with_error(item, error)
}

/// The user's function as it was (no longer a test, so no "never used" warning), plus the
/// error.
fn fn_with_error(function: &TestFn, error: syn::Error) -> TokenStream {
    with_error(
        quote! {
            #[allow(dead_code, unused_attributes)]
            #function
        },
        error,
    )
}

/// The body is called as `name()` or `name(&network)` from a plain function pointer.
fn check_function(function: &TestFn) -> syn::Result<()> {
    let signature = &function.sig;
    if let Some(attr) = function.attrs.iter().find(|attr| is_test_attr(attr)) {
        return Err(syn::Error::new_spanned(
            attr,
            "remove this attribute: #[dojjail::test] already makes the function a test",
        ));
    }
    if let Some(unsafety) = &signature.unsafety {
        return Err(syn::Error::new_spanned(
            unsafety,
            "a #[dojjail::test] body cannot be an `unsafe fn`; use an `unsafe` block inside it",
        ));
    }
    if !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &signature.generics,
            "a #[dojjail::test] body cannot be generic: write it for concrete types",
        ));
    }
    if let Some(where_clause) = &signature.generics.where_clause {
        return Err(syn::Error::new_spanned(
            where_clause,
            "a #[dojjail::test] body cannot have a `where` clause: write it for concrete types",
        ));
    }
    for (index, input) in signature.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(receiver) => {
                return Err(syn::Error::new_spanned(
                    receiver,
                    "a #[dojjail::test] body is a free function and cannot take `self`; take \
                     the network instead: `fn name(net: &dojjail::Network)`",
                ));
            }
            FnArg::Typed(typed) if index > 0 => {
                return Err(syn::Error::new_spanned(
                    typed,
                    "a #[dojjail::test] body takes at most one parameter, the network: \
                     `fn name(net: &dojjail::Network)`; get hosts with `net.get(\"name\")`",
                ));
            }
            FnArg::Typed(_) => {}
        }
    }
    Ok(())
}

/// `#[test]`, `#[tokio::test]`, `#[dojjail::test]`: a second test attribute.
fn is_test_attr(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "test")
}

/// `#[allow]`, `#[warn]`, `#[deny]`, `#[forbid]`, `#[expect]`.
fn is_lint_attr(attr: &Attribute) -> bool {
    ["allow", "warn", "deny", "forbid", "expect"]
        .iter()
        .any(|lint| attr.path().is_ident(lint))
}

fn expand_fn(function: &TestFn, args: &TestArgs) -> TokenStream {
    let signature = &function.sig;
    let name = &signature.ident;
    let vis = &function.vis;
    let private = quote!(::dojjail::__private);
    let registered_name = quote!(::core::concat!(
        ::core::module_path!(),
        "::",
        ::core::stringify!(#name)
    ));
    let timeout_ms = Literal::u64_unsuffixed(args.timeout_ms);

    // `#[expect]` only where the body is, or it would be unfulfilled on the other function.
    let test_attrs = function
        .attrs
        .iter()
        .filter(|attr| !attr.path().is_ident("expect"));
    let cfg_attrs = function
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"));
    let lint_attrs = function.attrs.iter().filter(|attr| is_lint_attr(attr));
    let block = &function.block;

    // A wrong parameter type is an ordinary type error at the user's parameter type.
    let (net_param, call) = match signature.inputs.first() {
        Some(FnArg::Typed(typed)) => (
            quote!(__dojjail_net),
            quote_spanned!(typed.ty.span()=> #name(__dojjail_net)),
        ),
        _ => (quote!(_), quote!(#name())),
    };
    let call = match &signature.asyncness {
        Some(asyncness) => quote_spanned!(asyncness.span()=> #private::block_on(#call)),
        None => call,
    };
    // A return type that is neither `()` nor `Result<(), E: Debug>` is reported at that type.
    // No `let` of a unit value and no unit argument: clippy sees these spans as the user's.
    let body = match &signature.output {
        ReturnType::Type(_, ty) if !is_unit(ty) => {
            if contains_impl_trait(ty.to_token_stream()) {
                quote_spanned!(ty.span()=> #private::IntoTestResult::into_test_result(#call))
            } else {
                quote!(<#ty as #private::IntoTestResult>::into_test_result(#call))
            }
        }
        _ => quote! {
            #call;
            ::core::result::Result::Ok(())
        },
    };
    // A path that is not a `fn() -> Network` is a type error at the path.
    let topology = &args.topology;

    quote_spanned! {name.span()=>
        #[::core::prelude::v1::test]
        #(#test_attrs)*
        #vis fn #name() {
            #private::run_test(
                #registered_name,
                ::core::time::Duration::from_millis(#timeout_ms),
            )
        }

        #(#cfg_attrs)*
        const _: () = {
            #(#lint_attrs)*
            #signature #block

            #private::inventory::submit! {
                #private::TestRegistration {
                    name: #registered_name,
                    topology: #topology,
                    body: {
                        fn __dojjail_body(
                            #net_param: &#private::Network,
                        ) -> ::core::result::Result<(), #private::String> {
                            #body
                        }
                        __dojjail_body
                    },
                }
            }
        };
    }
}

/// `()`, written out.
fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// `impl Trait` anywhere in a type, which cannot be named in `<T as Trait>::f`.
fn contains_impl_trait(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => ident == "impl",
        TokenTree::Group(group) => contains_impl_trait(group.stream()),
        _ => false,
    })
}
