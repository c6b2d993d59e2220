//! The one error type of dojjail: every failure a user can cause says what was wrong and
//! what to do about it.

use std::io;

/// The result type of every fallible dojjail operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when starting hosts, running code in them or wiring networks.
///
/// Messages are lowercase and name the fix where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A host name that cannot be a hostname.
    #[error("invalid host name {name:?}: {reason}; use 1 to 64 bytes without NUL or '/'")]
    InvalidHostName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// An entrypoint name that no `#[dojjail::host]` function in this binary registered.
    #[error(
        "no entrypoint named {name:?} is registered in this binary; mark the function with \
         #[dojjail::host] and make sure the crate that defines it is linked into this binary \
         (registered: {known})"
    )]
    UnknownEntrypoint {
        /// The name that was asked for.
        name: String,
        /// The names this binary knows, comma separated.
        known: String,
    },

    /// The operation needs a running host.
    #[error("host {host:?} is not running; call run() first")]
    NotRunning {
        /// The host's name.
        host: String,
    },

    /// The host ran once and has stopped; hosts do not restart.
    #[error("host {host:?} has stopped ({reason}); create a new Host to run again")]
    Stopped {
        /// The host's name.
        host: String,
        /// Why it stopped (killed, its entrypoint returned, ...).
        reason: String,
    },

    /// User namespaces cannot be created, so nothing can be isolated without root.
    #[error("user namespaces are unavailable ({cause}); {fix}")]
    UserNamespacesUnavailable {
        /// The system call that failed and how.
        cause: String,
        /// What to change on the machine.
        fix: &'static str,
    },

    /// The kernel refused a host because a limit was reached: namespace counts or nesting,
    /// or processes.
    #[error(
        "host {host:?}: cannot start: {limit} was reached; stop hosts that are no longer \
         needed, or raise the limit"
    )]
    LimitReached {
        /// The host's name.
        host: String,
        /// Which limit, with its current values where they can be read.
        limit: String,
    },

    /// A closure given to `exec` panicked; the host is still usable.
    #[error("host {host:?}: the closure passed to exec panicked: {message}")]
    ExecPanicked {
        /// The host's name.
        host: String,
        /// The panic message.
        message: String,
    },

    /// The host's entrypoint panicked.
    #[error("host {host:?}: its entrypoint panicked: {message}")]
    EntrypointPanicked {
        /// The host's name.
        host: String,
        /// The panic message.
        message: String,
    },

    /// The entrypoint process ended without a result (killed, or exited early).
    #[error("host {host:?}: its entrypoint ended without a result ({status})")]
    EntrypointFailed {
        /// The host's name.
        host: String,
        /// How the process ended.
        status: String,
    },

    /// `wait` was called on a host that has no entrypoint result to give.
    #[error("host {host:?}: nothing to wait for: {reason}")]
    NothingToWait {
        /// The host's name.
        host: String,
        /// Why: no entrypoint, or its result was already taken.
        reason: &'static str,
    },

    /// A value crossing a process boundary did not (de)serialize.
    #[error("host {host:?}: {what} could not be (de)serialized as JSON: {source}")]
    Json {
        /// The host's name.
        host: String,
        /// Which value.
        what: &'static str,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },

    /// A program could not be started inside a host.
    #[error("host {host:?}: cannot run {program:?}: {source}")]
    Spawn {
        /// The host's name.
        host: String,
        /// The program as given.
        program: String,
        /// Why exec failed (not found, permission denied, ...).
        #[source]
        source: io::Error,
    },

    /// Setting up a host failed inside its own init process.
    #[error("host {host:?}: setup failed while trying to {step}: {source}")]
    Setup {
        /// The host's name.
        host: String,
        /// The step that failed.
        step: String,
        /// The operating system's answer.
        #[source]
        source: io::Error,
    },

    /// A system call in the controlling process failed.
    #[error("host {host:?}: {op} failed: {source}")]
    Os {
        /// The host (or network) the call was for.
        host: String,
        /// What was attempted.
        op: &'static str,
        /// The operating system's answer.
        #[source]
        source: io::Error,
    },

    /// Something did not happen in time.
    #[error("host {host:?}: timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The host's name.
        host: String,
        /// What was awaited.
        what: String,
        /// How long.
        after: std::time::Duration,
    },

    /// A subnet that cannot be used.
    #[error("network {network:?}: invalid subnet {cidr:?}: {reason}")]
    InvalidSubnet {
        /// The network's name.
        network: String,
        /// The subnet as given.
        cidr: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An address that cannot be given to a host.
    #[error("network {network:?}: cannot give {address} to host {host:?}: {reason}")]
    InvalidAddress {
        /// The network's name.
        network: String,
        /// The host's name.
        host: String,
        /// The address as given.
        address: std::net::Ipv4Addr,
        /// Why: outside the subnet, the network or broadcast address, or taken.
        reason: String,
    },

    /// Every usable address of the subnet is taken.
    #[error(
        "network {network:?}: no address left in {subnet} for host {host:?}; \
         choose a larger subnet with Network::subnet"
    )]
    SubnetFull {
        /// The network's name.
        network: String,
        /// The subnet.
        subnet: String,
        /// The host that found no address.
        host: String,
    },

    /// A change to a network's membership or edges that cannot be made.
    #[error("network {network:?}: {reason}")]
    Topology {
        /// The network's name.
        network: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A netlink operation on a network failed.
    #[error("network {network:?}: {op} failed: {source}")]
    Netlink {
        /// The network's name.
        network: String,
        /// What was attempted.
        op: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },

    /// The host's init process broke the protocol or vanished mid-conversation.
    #[error("host {host:?}: lost contact with the host's init process: {detail}")]
    Protocol {
        /// The host's name.
        host: String,
        /// What went wrong.
        detail: String,
    },
}

impl Error {
    pub(crate) fn os(host: &str, op: &'static str, source: impl Into<io::Error>) -> Self {
        Error::Os {
            host: host.to_owned(),
            op,
            source: source.into(),
        }
    }

    pub(crate) fn protocol(host: &str, detail: impl Into<String>) -> Self {
        Error::Protocol {
            host: host.to_owned(),
            detail: detail.into(),
        }
    }
}
