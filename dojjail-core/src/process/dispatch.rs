//! What every binary linking dojjail does before `main`: if it was re-executed as a host's
//! init or entrypoint, play that role and exit; otherwise make sure it may create
//! namespaces. Running in a constructor is what lets test binaries, examples and users'
//! own programs work without a line in `main`, and it is the only moment an unprivileged
//! process is certain to be single-threaded.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::channel::Channel;
use super::message::EntrypointOutcome;
use super::{registry, spawn, zygote};

/// The environment variable naming the role of a re-executed process.
pub const ROLE_ENV: &str = "DOJJAIL_ROLE";
pub(crate) const ROLE_ZYGOTE: &str = "zygote";
pub(crate) const ROLE_ENTRYPOINT: &str = "entrypoint";
pub(crate) const ENTRYPOINT_ENV: &str = "DOJJAIL_ENTRYPOINT";
pub(crate) const ARGS_ENV: &str = "DOJJAIL_ARGS";
/// The entrypoint writes its [`EntrypointOutcome`] here (a memfd the controller reads).
pub(crate) const RESULT_FD: i32 = 3;

/// Arguments glibc passes to every `.init_array` function.
type Constructor = extern "C" fn(libc::c_int, *mut *mut libc::c_char, *mut *mut libc::c_char);

/// Our constructor, written by hand rather than with the `ctor` crate: a plain `.init_array`
/// entry that receives glibc's (argc, argv, envp), which it passes on (see
/// [`run_later_constructors`]).
#[used]
#[unsafe(link_section = ".init_array")]
static BEFORE_MAIN: Constructor = before_main;

extern "C" fn before_main(
    argc: libc::c_int,
    argv: *mut *mut libc::c_char,
    envp: *mut *mut libc::c_char,
) {
    let Some(role) = std::env::var_os(ROLE_ENV) else {
        crate::ns::become_namespace_root();
        return;
    };
    // A role looks things up in `inventory` registries (entrypoints, tests, roles), which
    // constructors fill: make sure all of them have run, whatever the link order (LTO
    // merges crates and reorders them). Roles never return, so none runs twice.
    run_later_constructors(argc, argv, envp);
    play(role);
}

/// Runs the entries of the program's `.init_array` that come after ours, which glibc has
/// not called yet. The dynamic section gives the array; ours is found by address.
fn run_later_constructors(
    argc: libc::c_int,
    argv: *mut *mut libc::c_char,
    envp: *mut *mut libc::c_char,
) {
    let mut array: (usize, usize) = (0, 0);
    unsafe extern "C" fn find(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: glibc hands us a valid dl_phdr_info; `data` is our `array`.
        let (info, array) = unsafe { (&*info, &mut *(data as *mut (usize, usize))) };
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let base = info.dlpi_addr as usize;
        for header in headers.iter().filter(|h| h.p_type == libc::PT_DYNAMIC) {
            let mut entry = (base + header.p_vaddr as usize) as *const Dyn;
            // SAFETY: the dynamic section is an array of entries ended by DT_NULL.
            unsafe {
                while (*entry).tag != DT_NULL {
                    let value = (*entry).value;
                    match (*entry).tag {
                        DT_INIT_ARRAY => {
                            // Some loaders relocate the dynamic section in place, some not.
                            array.0 = if value >= base { value } else { value + base };
                        }
                        DT_INIT_ARRAYSZ => array.1 = value,
                        _ => {}
                    }
                    entry = entry.add(1);
                }
            }
        }
        1 // the first object is the program itself: stop there
    }
    // SAFETY: `find` only reads what glibc hands it and writes `array`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(find),
            &mut array as *mut (usize, usize) as *mut libc::c_void,
        )
    };
    let (start, bytes) = array;
    if start == 0 || bytes == 0 {
        return;
    }
    let count = bytes / std::mem::size_of::<usize>();
    // SAFETY: DT_INIT_ARRAY/DT_INIT_ARRAYSZ describe an array of function addresses.
    let entries = unsafe { std::slice::from_raw_parts(start as *const usize, count) };
    let ours = before_main as Constructor as usize;
    let Some(position) = entries.iter().position(|&entry| entry == ours) else {
        return;
    };
    for &entry in &entries[position + 1..] {
        if entry == 0 || entry == usize::MAX {
            continue;
        }
        // SAFETY: an .init_array entry is a constructor taking glibc's (argc, argv, envp);
        // glibc would have called it right after us, and will not now: we never return.
        let constructor: Constructor = unsafe { std::mem::transmute(entry) };
        constructor(argc, argv, envp);
    }
}

/// An entry of the ELF dynamic section (`ElfW(Dyn)` of elf.h; the libc crate lacks it).
#[repr(C)]
struct Dyn {
    tag: isize,
    value: usize,
}

/// elf.h's tags for the end of the dynamic section and the constructor array.
const DT_NULL: isize = 0;
const DT_INIT_ARRAY: isize = 25;
const DT_INIT_ARRAYSZ: isize = 27;

/// Plays the role a re-executed process was started for; never returns.
fn play(role: std::ffi::OsString) {
    // SAFETY: constructors run before main, while the process is single-threaded.
    unsafe { std::env::remove_var(ROLE_ENV) };
    // Roles run user code before std's runtime has set SIGPIPE to ignored, as it is for
    // every Rust main: do the same, so a write to a closed pipe is an error, not death.
    // SAFETY: changing a signal disposition has no memory preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    if role == ROLE_ZYGOTE {
        // SAFETY: the launcher placed the channel at this descriptor for us alone.
        let channel = unsafe { Channel::adopt_inherited(spawn::LAUNCH_CHANNEL_FD) };
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
