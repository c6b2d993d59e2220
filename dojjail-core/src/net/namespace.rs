//! Network namespaces that are not hosts: a network's bridge lives in one of these. It
//! needs no process, only a descriptor that keeps it alive.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use nix::sched::{setns, unshare, CloneFlags};

/// Creates a network namespace and returns a handle on it. Closing the handle (with
/// every socket opened inside) destroys it and every interface in it.
pub(crate) fn create() -> io::Result<File> {
    // A thread of its own: unshare changes the calling thread's namespace for good.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(CloneFlags::CLONE_NEWNET)?;
                File::open("/proc/thread-self/ns/net")
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Runs `f` on a short-lived thread inside the network namespace `netns`; sockets `f`
/// opens stay bound to it.
pub(crate) fn within<T: Send>(
    netns: &File,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}
