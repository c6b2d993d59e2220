//! The attribute macros of dojjail. Use them through the `dojjail` crate:
//! `#[dojjail::host]` and `#[dojjail::test]`. This file only forwards to one module per
//! macro; generated code names nothing but `::dojjail::__private` and `::core`.

use proc_macro::TokenStream;

mod args;
mod host;
mod test;

/// Registers a function as a host entrypoint, so a re-executed copy of the binary can run
/// it as a host's main process. See `dojjail::Host::entrypoint`.
///
/// The function keeps its name as a value that implements `dojjail::Entrypoint`; call it
/// directly in this process with `name.call(args...)`.
#[proc_macro_attribute]
pub fn host(args: TokenStream, item: TokenStream) -> TokenStream {
    host::expand(args.into(), item.into()).into()
}

/// Marks a function as a dojjail test: a `#[test]` that runs the function in a fresh process
/// against a fresh topology, built by `topology = path::to::fn` (a `fn() -> dojjail::Network`).
///
/// The function takes nothing or `&dojjail::Network`, may be `async`, and returns `()` or a
/// `Result<(), E: Debug>`. `timeout = "10s"` (`ms`, `s` or `m`; 60 s by default) bounds how
/// long the test may run. `#[should_panic]` and `#[ignore]` work as for `#[test]`.
///
/// ```ignore
/// fn two_hosts() -> dojjail::Network {
///     dojjail::Network::new("two-hosts")
/// }
///
/// #[dojjail::test(topology = two_hosts, timeout = "30s")]
/// fn serves_hello(net: &dojjail::Network) {
///     assert_eq!(net.name(), "two-hosts");
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    test::expand(args.into(), item.into()).into()
}
