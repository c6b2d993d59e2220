//! Why the kernel refused to create a host's namespaces, in words that name the fix.
//!
//! clone3(2) answers with a bare errno: EPERM when user namespaces are forbidden, ENOSPC
//! when a per-user-namespace count limit (`/proc/sys/user/max_*_namespaces`) or the nesting
//! depth of user or pid namespaces is reached (kernels before 4.9 said EUSERS for user
//! namespaces), EAGAIN when the process limits are reached.

use std::fs;
use std::io;

use super::controller::namespaces_unavailable;
use super::Namespaces;
use crate::error::Error;

/// The error for a failed clone of `host`'s init with `namespaces`.
pub(crate) fn refused(host: &str, namespaces: Namespaces, error: io::Error) -> Error {
    let limit = |limit: String| Error::LimitReached {
        host: host.to_owned(),
        limit,
    };
    match error.raw_os_error() {
        Some(libc::EPERM) if namespaces.contains(Namespaces::USER) => {
            namespaces_unavailable(&format!("clone3(CLONE_NEWUSER | ...): {error}"))
        }
        // A limit of 0 user namespaces is how some distributions forbid them.
        Some(libc::ENOSPC)
            if namespaces.contains(Namespaces::USER)
                && read_limit("user").as_deref() == Some("0") =>
        {
            namespaces_unavailable(&format!("clone3(CLONE_NEWUSER | ...): {error}"))
        }
        Some(libc::ENOSPC) => limit(format!(
            "the kernel's limit on namespaces ({}; user and pid namespaces nest at most 32 \
             deep)",
            count_limits(namespaces)
        )),
        Some(libc::EUSERS) => limit("user namespaces nest at most 32 deep".to_owned()),
        Some(libc::EAGAIN) => limit(
            "the limit on processes (this user's RLIMIT_NPROC, kernel.threads-max or \
             kernel.pid_max)"
                .to_owned(),
        ),
        _ => Error::os(host, "clone3 of the host's init", error),
    }
}

/// The count limits that apply to `namespaces`, as this process's user namespace has them
/// (an ancestor's lower limit applies too), lowest first: the likely culprit.
fn count_limits(namespaces: Namespaces) -> String {
    let mut limits: Vec<(Option<u64>, String)> = namespaces
        .kernel_names()
        .map(|kind| {
            let value = read_limit(kind);
            let sort_key = value.as_deref().and_then(|v| v.parse().ok());
            let shown = value.as_deref().unwrap_or("?");
            (sort_key, format!("user.max_{kind}_namespaces = {shown}"))
        })
        .collect();
    limits.sort_by_key(|(value, _)| value.unwrap_or(u64::MAX));
    let limits: Vec<String> = limits.into_iter().map(|(_, text)| text).collect();
    limits.join(", ")
}

fn read_limit(kind: &str) -> Option<String> {
    let path = format!("/proc/sys/user/max_{kind}_namespaces");
    fs::read_to_string(path)
        .ok()
        .map(|value| value.trim().to_owned())
}
