//! Entering a host's namespaces from a thread of the controlling process.
//!
//! A thread may `setns` into net, uts and (after `unshare(CLONE_FS)`) mount namespaces of
//! hosts below the process's user namespace; it can never enter a user or pid namespace,
//! because the process is multithreaded. Code run this way shares the process's memory,
//! so closures can borrow, and every thread it starts inherits the host's namespaces.

use std::fs::File;
use std::os::fd::AsFd;

use nix::sched::{setns, unshare, CloneFlags};

use super::Namespaces;

/// Open handles on a host's namespaces: they keep the namespaces alive while held.
#[derive(Debug)]
pub(crate) struct NamespaceFds {
    pub(crate) net: Option<File>,
    pub(crate) uts: Option<File>,
    pub(crate) mnt: Option<File>,
}

impl NamespaceFds {
    /// Opens the namespaces of process `pid` that `which` names.
    pub(crate) fn open(pid: i32, which: Namespaces) -> std::io::Result<Self> {
        let open = |ns: Namespaces, name: &str| -> std::io::Result<Option<File>> {
            if which.contains(ns) {
                super::open_proc(&format!("{pid}/ns/{name}"), false).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            net: open(Namespaces::NET, "net")?,
            uts: open(Namespaces::UTS, "uts")?,
            mnt: open(Namespaces::MOUNT, "mnt")?,
        })
    }
}

/// Moves the calling thread into the host's net, uts and mount namespaces.
///
/// Only call on a thread that dojjail owns: the thread's filesystem context is unshared from
/// the process and it can never come back to the caller's namespaces.
pub(crate) fn enter_on_this_thread(ns: &NamespaceFds) -> nix::Result<()> {
    if let Some(mnt) = &ns.mnt {
        // setns(CLONE_NEWNS) changes root and cwd, which threads share unless unshared.
        unshare(CloneFlags::CLONE_FS)?;
        setns(mnt.as_fd(), CloneFlags::CLONE_NEWNS)?;
    }
    if let Some(uts) = &ns.uts {
        setns(uts.as_fd(), CloneFlags::CLONE_NEWUTS)?;
    }
    if let Some(net) = &ns.net {
        setns(net.as_fd(), CloneFlags::CLONE_NEWNET)?;
    }
    Ok(())
}
