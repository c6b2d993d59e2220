//! The controlling process's own privilege: to create and enter namespaces it needs
//! `CAP_SYS_ADMIN` in its user namespace. Root has it; an ordinary user gets it by becoming
//! root of a fresh user namespace. That is only possible while the process is
//! single-threaded (unshare(2): EINVAL otherwise), so it happens in a constructor that runs
//! before `main` and before any test harness starts threads.

use std::fs::{self, File};
use std::sync::OnceLock;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{getegid, geteuid};

use crate::error::{Error, Result};

/// What the constructor found: `Ok` when the process may create namespaces, otherwise the
/// failed call and its errno.
static PRIVILEGE: OnceLock<std::result::Result<(), String>> = OnceLock::new();

const CAP_SYS_ADMIN: u32 = 21;

const FIX: &str = "run as root, or let ordinary users create user namespaces: \
    `sysctl -w kernel.unprivileged_userns_clone=1` (Debian kernels), \
    `sysctl -w user.max_user_namespaces=15000`, and on Ubuntu 23.10 and later \
    `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`; inside Docker, start the \
    container with a seccomp profile that allows clone3, unshare, setns and sethostname \
    (or with `--security-opt seccomp=unconfined`)";

/// This process's own `/proc`, opened before `main`. Threads that entered a host's mount
/// namespace see the host's `/proc` under that path, where the controller's pids mean
/// nothing (or another process): everything that names a host's init by pid goes through
/// this handle instead.
static PROC: OnceLock<std::io::Result<File>> = OnceLock::new();

/// Opens `path` (like `"1234/ns/net"`) relative to this process's own `/proc`, for reading
/// or, with `write`, for writing.
pub(crate) fn open_proc(path: &str, write: bool) -> std::io::Result<File> {
    use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
    let proc = PROC.get_or_init(open_own_proc);
    let proc = proc
        .as_ref()
        .map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let flags = if write {
        nix::fcntl::OFlag::O_WRONLY
    } else {
        nix::fcntl::OFlag::O_RDONLY
    } | nix::fcntl::OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(proc.as_fd(), path, flags, nix::sys::stat::Mode::empty())?;
    // SAFETY: openat returned a new descriptor that we own.
    Ok(unsafe { File::from_raw_fd(fd.into_raw_fd()) })
}

fn open_own_proc() -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open("/proc")
}

/// Makes the current process root of a new user namespace unless it already holds
/// `CAP_SYS_ADMIN`. Must run while the process is single-threaded.
pub fn become_namespace_root() {
    PROC.get_or_init(open_own_proc);
    PRIVILEGE.get_or_init(|| {
        if has_cap_sys_admin() {
            return Ok(());
        }
        let (uid, gid) = (geteuid(), getegid());
        unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| format!("unshare(CLONE_NEWUSER): {e}"))?;
        // setgroups must be denied before an unprivileged process may write gid_map.
        fs::write("/proc/self/setgroups", "deny")
            .and_then(|()| fs::write("/proc/self/uid_map", format!("0 {uid} 1")))
            .and_then(|()| fs::write("/proc/self/gid_map", format!("0 {gid} 1")))
            .map_err(|e| format!("writing this process's uid/gid map: {e}"))
    });
}

/// Returns an error naming the cause and the fix when this process cannot create namespaces.
pub(crate) fn ensure_privileged() -> Result<()> {
    match PRIVILEGE.get() {
        Some(Ok(())) => Ok(()),
        Some(Err(call)) => Err(namespaces_unavailable(call)),
        // The constructor did not run (a binary that dlopen()s us late, say): only a
        // process that already holds the capability can go on.
        None if has_cap_sys_admin() => Ok(()),
        None => Err(Error::UserNamespacesUnavailable {
            cause: "this process is not root and dojjail's start-up hook did not run".into(),
            fix: FIX,
        }),
    }
}

/// The error for a failed attempt (`call`, with its errno) to create a user namespace.
pub(crate) fn namespaces_unavailable(call: &str) -> Error {
    Error::UserNamespacesUnavailable {
        cause: format!("{call}{}", sysctl_hint()),
        fix: FIX,
    }
}

fn has_cap_sys_admin() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// Names the sysctl that forbids user namespaces, when one does.
fn sysctl_hint() -> String {
    let read = |path: &str| fs::read_to_string(path).ok().map(|s| s.trim().to_owned());
    let mut hints = Vec::new();
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        hints.push("kernel.unprivileged_userns_clone is 0");
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        hints.push("user.max_user_namespaces is 0");
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        hints.push("kernel.apparmor_restrict_unprivileged_userns is 1");
    }
    if hints.is_empty() {
        String::new()
    } else {
        format!("; {}", hints.join(", "))
    }
}
