//! What every binary linking dojjail does before `main`: if it was re-executed as a host's
//! init or entrypoint, play that role and exit; otherwise make sure it may create
//! namespaces. Running in a constructor is what lets test binaries, examples and users'
//! own programs work without a line in `main`, and it is the only moment an unprivileged
//! process is certain to be single-threaded.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::message::EntrypointOutcome;
use super::{init, registry, spawn, zygote};

/// The environment variable naming the role of a re-executed process.
pub const ROLE_ENV: &str = "DOJJAIL_ROLE";
pub(crate) const ROLE_ZYGOTE: &str = "zygote";
pub(crate) const ROLE_ENTRYPOINT: &str = "entrypoint";
pub(crate) const ENTRYPOINT_ENV: &str = "DOJJAIL_ENTRYPOINT";
pub(crate) const ARGS_ENV: &str = "DOJJAIL_ARGS";
/// The entrypoint writes its [`EntrypointOutcome`] here (a memfd the controller reads).
pub(crate) const RESULT_FD: i32 = 3;

/// Our constructor, written by hand rather than with the `ctor` crate: it must be a plain,
/// unprioritized `.init_array` entry. Those run in link order, and every crate that
/// registers entrypoints through `inventory` (plain entries too) depends on dojjail, so the
/// linker places it before us: by the time we run, every entrypoint is registered. The
/// `ctor` crate's prioritized entries run before all plain ones, i.e. too early.
#[used]
#[unsafe(link_section = ".init_array")]
static BEFORE_MAIN: extern "C" fn() = {
    extern "C" fn before_main() {
        dojjail_before_main();
    }
    before_main
};

fn dojjail_before_main() {
    let Some(role) = std::env::var_os(ROLE_ENV) else {
        crate::ns::become_namespace_root();
        return;
    };
    // SAFETY: constructors run before main, while the process is single-threaded.
    unsafe { std::env::remove_var(ROLE_ENV) };
    // Roles run user code before std's runtime has set SIGPIPE to ignored, as it is for
    // every Rust main: do the same, so a write to a closed pipe is an error, not death.
    // SAFETY: changing a signal disposition has no memory preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if role == ROLE_ZYGOTE {
        // SAFETY: the launcher placed the channel at this descriptor for us alone.
        let channel = unsafe { init::control_from_raw(spawn::INIT_CONTROL_FD) };
        zygote::run(channel);
    } else if role == ROLE_ENTRYPOINT {
        run_entrypoint();
    } else if let Some(handler) = inventory::iter::<RoleHandler>
        .into_iter()
        .find(|handler| role == handler.role)
    {
        (handler.run)();
    }
}

/// A role that other dojjail crates play in re-executed processes (the test runner's
/// "test" role). Not public API.
#[doc(hidden)]
pub struct RoleHandler {
    /// The value of `DOJJAIL_ROLE` that selects it.
    pub role: &'static str,
    /// Plays the role; never returns.
    pub run: fn() -> !,
}

inventory::collect!(RoleHandler);

/// Runs the entrypoint named in the environment, writes its outcome, exits.
fn run_entrypoint() -> ! {
    let name = std::env::var(ENTRYPOINT_ENV).unwrap_or_default();
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    // SAFETY: still single-threaded; user code must not see dojjail's variables.
    unsafe {
        std::env::remove_var(ENTRYPOINT_ENV);
        std::env::remove_var(ARGS_ENV);
    }
    // SAFETY: the init placed the controller's result file at this descriptor for us.
    let result_fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(RESULT_FD) };
    // Processes the entrypoint starts must not inherit it.
    let _ = nix::fcntl::fcntl(
        result_fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // An entrypoint may start hosts of its own.
    crate::ns::become_namespace_root();
    let outcome = match (registry::find(&name), serde_json::from_str(&args)) {
        (None, _) => {
            EntrypointOutcome::BadArguments(format!("no entrypoint named {name:?} in this binary"))
        }
        (_, Err(e)) => EntrypointOutcome::BadArguments(e.to_string()),
        (Some(registration), Ok(args)) => {
            match catch_unwind(AssertUnwindSafe(|| (registration.run)(args))) {
                Ok(Ok(value)) => EntrypointOutcome::Returned(value),
                Ok(Err(e)) => EntrypointOutcome::BadArguments(e),
                Err(panic) => EntrypointOutcome::Panicked(panic_message(&*panic)),
            }
        }
    };
    // SAFETY: the init placed the controller's result file at this descriptor.
    let mut result = unsafe { File::from_raw_fd(RESULT_FD) };
    let written = serde_json::to_vec(&outcome)
        .map_err(std::io::Error::other)
        .and_then(|bytes| result.write_all(&bytes));
    let _ = std::io::stdout().flush();
    std::process::exit(if written.is_ok() { 0 } else { 1 })
}

/// The text of a panic payload.
/// Not public API.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
