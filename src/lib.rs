//! # dojjail
//!
//! Isolated Linux hosts joined by virtual networks, driven from Rust: think docker with a
//! tiny implementation and a library interface. A [`Host`] is a set of namespaces (user,
//! mount, cgroup, uts, ipc, pid, net) with an init of its own; closures, shell commands and
//! registered entrypoints run inside it.
//!
//! ```no_run
//! # fn main() -> dojjail::Result<()> {
//! let host = dojjail::Host::new("host-1");
//! host.run()?;
//! let output = host.exec_shell("hostname; whoami")?;
//! assert_eq!(String::from_utf8_lossy(&output.stdout), "host-1\nroot\n");
//! assert_eq!(host.exec(|| 1 + 1)?, 2);
//! # Ok(())
//! # }
//! ```
//!
//! An entrypoint is a function marked `#[dojjail::host]`; it runs as the host's main
//! process in a re-executed copy of the binary, and [`Host::wait`] returns its value:
//!
//! ```no_run
//! #[dojjail::host]
//! fn add(a: i32, b: i32) -> i32 {
//!     a + b
//! }
//!
//! # fn main() -> dojjail::Result<()> {
//! let host = dojjail::Host::new("calc").entrypoint_with(add, (40, 2));
//! host.run()?;
//! assert_eq!(host.wait::<i32>()?, 42);
//! # Ok(())
//! # }
//! ```
//!
//! Nothing needs to be added to `main`: a constructor that runs before it makes an
//! unprivileged process root of its own user namespace (when it is not root already), and
//! lets re-executed copies of the binary play their role inside hosts.

pub use dojjail_core::{
    Entrypoint, Error, Host, HostChild, HostCommand, Namespaces, Network, Result, Stdio, Subnet,
};
pub use dojjail_macros::{host, test};

/// Not public API: used by the code the macros generate.
#[doc(hidden)]
pub mod __private {
    pub use dojjail_core::__private::*;
    pub use dojjail_core::Network;
    pub use dojjail_test::{block_on, run_test, IntoTestResult, TestRegistration};
}
