//! The engine of [dojjail](https://docs.rs/dojjail): isolated hosts made of Linux
//! namespaces, run from Rust. Use it through the `dojjail` crate, which re-exports
//! everything here together with the `#[dojjail::host]` and `#[dojjail::test]` macros.
//!
//! Layout: [`ns`](crate::Namespaces) (which namespaces, the controller's own privilege,
//! entering from a thread), `process` (entrypoint registry, the constructor's role
//! dispatch, zygotes that fork inits, the typed channel, the host's init, commands), `net`
//! (netlink, nftables), [`Host`], [`Network`], `exec` (closures).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod error;
mod exec;
mod host;
mod net;
mod network;
mod ns;
mod process;
mod spin;

pub use error::{Error, Result};
pub use host::Host;
pub use net::Subnet;
pub use network::Network;
pub use ns::Namespaces;
pub use process::command::{HostChild, HostCommand, Stdio};
pub use process::registry::Entrypoint;

/// Not public API: used by the code that `dojjail-macros` generates.
#[doc(hidden)]
pub mod __private {
    pub use crate::host::capture_output;
    pub use crate::ns::become_namespace_root;
    pub use crate::process::dispatch::{panic_message, RoleHandler, ROLE_ENV};
    pub use crate::process::registry::{Entrypoint, EntrypointRegistration};
    pub use inventory;
    pub use serde_json;
    pub use std::string::{String, ToString};
}
