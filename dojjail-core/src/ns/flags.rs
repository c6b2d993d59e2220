use std::fmt;
use std::ops::{BitOr, Sub};

use nix::sched::CloneFlags;

/// A set of Linux namespaces a host gets of its own.
///
/// The default, [`Namespaces::ALL`], isolates a host in every namespace: user, mount,
/// cgroup, uts (hostname), ipc, pid and net.
///
/// ```
/// use dojjail_core::Namespaces;
/// // A host that shares the caller's network but has its own hostname and processes.
/// let ns = Namespaces::ALL - Namespaces::NET;
/// assert!(ns.contains(Namespaces::PID));
/// assert!(!ns.contains(Namespaces::NET));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Namespaces(CloneFlags);

impl Namespaces {
    /// User namespace: the host's root is root only inside the host.
    pub const USER: Self = Self(CloneFlags::CLONE_NEWUSER);
    /// Mount namespace: its own `/proc`, `/tmp` and `/etc/hosts`.
    pub const MOUNT: Self = Self(CloneFlags::CLONE_NEWNS);
    /// Cgroup namespace.
    pub const CGROUP: Self = Self(CloneFlags::CLONE_NEWCGROUP);
    /// UTS namespace: its own hostname.
    pub const UTS: Self = Self(CloneFlags::CLONE_NEWUTS);
    /// IPC namespace: its own System V IPC and POSIX message queues.
    pub const IPC: Self = Self(CloneFlags::CLONE_NEWIPC);
    /// PID namespace: the host's init is pid 1 and sees only the host's processes.
    pub const PID: Self = Self(CloneFlags::CLONE_NEWPID);
    /// Network namespace: its own interfaces, starting with `lo`.
    pub const NET: Self = Self(CloneFlags::CLONE_NEWNET);
    /// No namespace of its own.
    pub const NONE: Self = Self(CloneFlags::empty());
    /// Every namespace above: the default.
    pub const ALL: Self = Self(
        CloneFlags::CLONE_NEWUSER
            .union(CloneFlags::CLONE_NEWNS)
            .union(CloneFlags::CLONE_NEWCGROUP)
            .union(CloneFlags::CLONE_NEWUTS)
            .union(CloneFlags::CLONE_NEWIPC)
            .union(CloneFlags::CLONE_NEWPID)
            .union(CloneFlags::CLONE_NEWNET),
    );

    /// Whether every namespace of `other` is in `self`.
    pub fn contains(self, other: Self) -> bool {
        self.0.contains(other.0)
    }

    pub(crate) fn clone_flags(self) -> CloneFlags {
        self.0
    }

    /// The kernel's names of the namespaces in this set (as in `/proc/<pid>/ns/` and the
    /// `user.max_<name>_namespaces` sysctls).
    pub(crate) fn kernel_names(self) -> impl Iterator<Item = &'static str> {
        const NAMES: [(Namespaces, &str); 7] = [
            (Namespaces::USER, "user"),
            (Namespaces::MOUNT, "mnt"),
            (Namespaces::CGROUP, "cgroup"),
            (Namespaces::UTS, "uts"),
            (Namespaces::IPC, "ipc"),
            (Namespaces::PID, "pid"),
            (Namespaces::NET, "net"),
        ];
        NAMES
            .into_iter()
            .filter(move |(ns, _)| self.contains(*ns))
            .map(|(_, name)| name)
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Self::ALL
    }
}

impl BitOr for Namespaces {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl Sub for Namespaces {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(self.0 - rhs.0)
    }
}

impl fmt::Debug for Namespaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.kernel_names().collect();
        write!(f, "Namespaces({})", names.join(" | "))
    }
}
