//! Processes: the entrypoint registry, the constructor that dispatches re-executed roles,
//! launching zygotes and forking inits through them, the typed channel, the init itself,
//! and commands run inside hosts.

pub(crate) mod channel;
pub(crate) mod command;
pub(crate) mod dispatch;
pub(crate) mod init;
pub(crate) mod message;
mod raw;
pub(crate) mod registry;
pub(crate) mod spawn;
mod zygote;
