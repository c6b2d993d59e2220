//! Every message that crosses between the controlling process and a host's init.
//!
//! Byte strings (arguments, environment, paths) travel as `Vec<u8>` because Unix allows
//! them to be any bytes but NUL.

use serde::{Deserialize, Serialize};

/// How an init sets its host up. It travels in the zygote's fork request, so the init has
/// it from its first instruction and sets up while its ids are being mapped.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    /// The host's name, also its hostname when it has a uts namespace.
    pub name: String,
    pub set_hostname: bool,
    /// Mount a private `/proc` (needs mount and pid namespaces) and `/tmp`.
    pub private_mounts: bool,
    pub mount_proc: bool,
    pub loopback_up: bool,
    /// Keep running when the controller goes away.
    pub persistent: bool,
}

/// The init's first message on its control channel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum InitReport {
    /// Everything is set up; requests may follow.
    Ready,
    /// A setup step failed; the init exits after sending this.
    Failed { step: String, errno: i32 },
}

/// Requests on the control channel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Start a process. Descriptors attached, in order: the reply channel, stdin, stdout,
    /// stderr, then `extra_fds` more that the child gets as fd 3, 4, ...
    Spawn(SpawnRequest),
    /// Send `signal` to a process this init started, if it has not been reaped yet.
    Signal { pid: i32, signal: i32 },
}

/// What to run and how.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SpawnRequest {
    pub program: Program,
    /// argv, including argv[0].
    pub argv: Vec<Vec<u8>>,
    /// The full environment as `KEY=value`; `None` keeps the init's own.
    pub env: Option<Vec<Vec<u8>>>,
    pub cwd: Option<Vec<u8>>,
    pub extra_fds: usize,
    /// The host's main process: when it exits, the host stops.
    pub main: bool,
}

/// The program to execute.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Program {
    /// This very binary, re-executed (entrypoints).
    CurrentExe,
    /// A path, or a name looked up in the child's `PATH`.
    Path(Vec<u8>),
}

/// Messages on a spawned process's own reply channel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SpawnReply {
    /// The program is running with this pid (as seen inside the host).
    Spawned { pid: i32 },
    /// exec failed with this errno; no process remains.
    Failed { errno: i32 },
    /// The process ended; the raw wait status.
    Exited { status: i32 },
}

/// What an entrypoint process writes to its result file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EntrypointOutcome {
    Returned(serde_json::Value),
    Panicked(String),
    BadArguments(String),
}
