//! The attribute macros of dojjail. Use them through the `dojjail` crate:
//! `#[dojjail::host]` and `#[dojjail::test]`. This file only forwards to one module per
//! macro; generated code names nothing but `::dojjail::__private` and `::core`.

use proc_macro::TokenStream;

mod host;

/// Registers a function as a host entrypoint, so a re-executed copy of the binary can run
/// it as a host's main process. See `dojjail::Host::entrypoint`.
///
/// The function keeps its name as a value that implements `dojjail::Entrypoint`; call it
/// directly in this process with `name.call(args...)`.
#[proc_macro_attribute]
pub fn host(args: TokenStream, item: TokenStream) -> TokenStream {
    host::expand(args.into(), item.into()).into()
}
