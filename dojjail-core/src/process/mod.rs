//! Processes: the entrypoint registry, starting a host's init by re-execution, the typed
//! channel to it, the init itself, and commands run inside hosts.

pub(crate) mod channel;
pub(crate) mod command;
pub(crate) mod dispatch;
pub(crate) mod init;
pub(crate) mod message;
mod raw;
pub(crate) mod registry;
pub(crate) mod spawn;
mod zygote;
