//! Linux namespaces: which ones a host gets, how the controlling process gains the right to
//! create them, and how a thread enters a host's.

mod controller;
mod enter;
mod flags;
mod limits;

pub use controller::become_namespace_root;
pub(crate) use controller::{ensure_privileged, open_proc};
pub(crate) use enter::{enter_on_this_thread, NamespaceFds};
pub use flags::Namespaces;
pub(crate) use limits::refused;
