//! Every message that crosses between the controlling process and a host's init.
//!
//! Byte strings (arguments, environment, paths) travel as [`Bytes`] because Unix allows
//! them to be any bytes but NUL.

use std::fmt;
use std::ops::Deref;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// argv, including `argv[0]`.
    pub argv: Vec<Bytes>,
    /// The full environment as `KEY=value`; `None` keeps the init's own.
    pub env: Option<Vec<Bytes>>,
    pub cwd: Option<Bytes>,
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
    Path(Bytes),
}

/// Messages on a spawned process's own reply channel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum SpawnReply {
    /// The program is running with this pid (as seen inside the host).
    Spawned { pid: i32 },
    /// The process could not start: `step` failed with this errno; no process remains.
    Failed { step: SpawnStep, errno: i32 },
    /// The process ended; the raw wait status.
    Exited { status: i32 },
}

/// Where starting a process failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SpawnStep {
    /// An argument, environment entry or directory held a NUL byte.
    Arguments,
    /// The standard streams and extra descriptors could not be arranged.
    Descriptors,
    /// The working directory could not be entered.
    Directory,
    /// The program could not be executed.
    Exec,
}

impl SpawnStep {
    /// The step as the child reports it through its status pipe.
    pub(crate) fn code(self) -> u32 {
        self as u32
    }

    pub(crate) fn from_code(code: u32) -> SpawnStep {
        [
            SpawnStep::Arguments,
            SpawnStep::Descriptors,
            SpawnStep::Directory,
        ]
        .into_iter()
        .find(|step| step.code() == code)
        .unwrap_or(SpawnStep::Exec)
    }
}

/// What an entrypoint process writes to its result file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EntrypointOutcome {
    Returned(serde_json::Value),
    Panicked(String),
    BadArguments(String),
}

/// A byte string: an argument, an environment entry or a path. On the wire it is a JSON
/// string when it is UTF-8, as nearly all are (an array of numbers, four times as long and
/// slow to parse, would make a megabyte of arguments cost a second), and an array of bytes
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bytes(pub Vec<u8>);

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes(bytes)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.serialize_bytes(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E>(self, text: &str) -> Result<Bytes, E> {
                Ok(Bytes(text.as_bytes().to_vec()))
            }
            fn visit_string<E>(self, text: String) -> Result<Bytes, E> {
                Ok(Bytes(text.into_bytes()))
            }
            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(bytes.to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(Bytes(bytes))
            }
        }
        deserializer.deserialize_any(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn byte_strings_survive_the_wire_utf8_or_not() {
        for bytes in [
            b"plain".to_vec(),
            "h\u{e9}llo \"quoted\"\n".into(),
            vec![0xff, 0xfe, b'a'],
            vec![],
        ] {
            let json = serde_json::to_string(&Bytes(bytes.clone())).unwrap();
            let back: Bytes = serde_json::from_str(&json).unwrap();
            assert_eq!(back.0, bytes, "through {json}");
        }
        assert_eq!(
            serde_json::to_string(&Bytes(b"sh".to_vec())).unwrap(),
            "\"sh\""
        );
    }
}
