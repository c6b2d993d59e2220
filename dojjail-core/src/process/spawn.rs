//! Starting a host's init: `clone3` with the host's namespace flags, then an immediate
//! re-exec of this binary, so no Rust runs in a forked copy of a multithreaded process.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::{io, ptr, thread};

use nix::sched::CloneFlags;

use super::channel::Channel;
use super::dispatch::{ROLE_ENV, ROLE_INIT};
use crate::ns::Namespaces;

/// The descriptor number of the control channel inside a freshly started init.
pub(crate) const INIT_CONTROL_FD: RawFd = 3;

/// `struct clone_args` of clone3(2); the libc crate does not define it for glibc targets.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A started (not yet configured) init process.
#[derive(Debug)]
pub(crate) struct StartedInit {
    /// Its pid in the controller's pid namespace.
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub control: Channel,
}

/// Everything the child needs between clone and exec, prepared in the parent because the
/// child may not allocate.
struct ExecPlan {
    exe: RawFd,
    argv: Vec<CString>,
    envp: Vec<CString>,
    child_control: RawFd,
    death_signal: bool,
}

/// This binary, opened once; re-executing it through the descriptor keeps working after
/// the file on disk is replaced (cargo rebuilds) and inside other mount namespaces.
fn current_exe() -> io::Result<RawFd> {
    static EXE: OnceLock<std::result::Result<OwnedFd, i32>> = OnceLock::new();
    let fd = EXE.get_or_init(|| {
        let file = File::open("/proc/self/exe").map_err(|e| e.raw_os_error().unwrap_or(0))?;
        // Keep it clear of the low numbers the child rearranges.
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
        let high = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if high < 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        // SAFETY: `high` was just returned by fcntl and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(high) })
    });
    match fd {
        Ok(fd) => Ok(fd.as_raw_fd()),
        Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
    }
}

/// Starts an init in new `namespaces`. The child waits on its control channel until the
/// caller has written its id maps and sent one byte, then re-executes this binary.
pub(crate) fn clone_init(namespaces: Namespaces, persistent: bool) -> io::Result<StartedInit> {
    let exe = current_exe()?;
    let (control, child_control) = Channel::pair()?;
    let child_control = move_high(child_control.into_fd())?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(key, _)| key != ROLE_ENV)
        .map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend(value.into_vec());
            CString::new(entry).expect("environment entries hold no NUL")
        })
        .collect();
    envp.push(CString::new(format!("{ROLE_ENV}={ROLE_INIT}")).expect("no NUL"));
    let plan = ExecPlan {
        exe,
        argv: vec![CString::new("dojjail-init").expect("no NUL")],
        envp,
        child_control: child_control.as_raw_fd(),
        death_signal: !persistent,
    };
    let flags = namespaces.clone_flags();
    let (pid, pidfd) = on_spawner_thread(move || {
        // SAFETY: the child branch of clone_and_exec only makes async-signal-safe calls.
        let result = unsafe { clone_and_exec(flags, &plan) };
        drop(child_control);
        result
    })?;
    Ok(StartedInit {
        pid,
        pidfd,
        control,
    })
}

fn move_high(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if high < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `high` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(high) })
}

/// # Safety
/// Forks the process. The child runs only async-signal-safe code before exec or `_exit`.
unsafe fn clone_and_exec(flags: CloneFlags, plan: &ExecPlan) -> io::Result<(i32, OwnedFd)> {
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(ptr::null());
    let empty = c"";
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags.bits() as u64 | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM behaves like fork; `args` outlives the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // The child: only raw system calls from here on.
        // SAFETY: every call below is async-signal-safe and uses memory prepared before
        // the clone, which the child has its own copy of.
        unsafe {
            if plan.death_signal {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            }
            if libc::dup2(plan.child_control, INIT_CONTROL_FD) < 0 {
                libc::_exit(126);
            }
            // Wait for the parent to map our ids; EOF means it gave up on us.
            let mut go = 0u8;
            if libc::read(INIT_CONTROL_FD, (&mut go as *mut u8).cast(), 1) != 1 {
                libc::_exit(125);
            }
            libc::syscall(
                libc::SYS_execveat,
                plan.exe,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(127);
        }
    }
    // SAFETY: CLONE_PIDFD stored a descriptor that we now own.
    Ok((pid as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on a thread that lives as long as the process. Hosts are cloned there because
/// their parent-death signal fires when the *thread* that created them exits (prctl(2)):
/// a host started from a short-lived thread would die with it.
fn on_spawner_thread<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> R {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("dojjail-spawner".into())
            .spawn(move || {
                for job in receiver {
                    job();
                }
            })
            .expect("cannot start the dojjail spawner thread");
        Mutex::new(sender)
    });
    let (reply, result) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply.send(job());
    });
    sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .expect("the dojjail spawner thread never exits");
    result.recv().expect("the spawner runs every job")
}

/// Writes the id maps of a child in a new user namespace: its root is our own uid/gid.
pub(crate) fn write_id_maps(pid: i32) -> io::Result<()> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1"))?;
    let gid_map = format!("/proc/{pid}/gid_map");
    let mapping = format!("0 {gid} 1");
    std::fs::write(&gid_map, &mapping).or_else(|_| {
        // Without CAP_SETGID over the parent's groups, setgroups must be denied first.
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
        std::fs::write(&gid_map, &mapping)
    })
}

/// Environment of this process, minus dojjail's own variables, as `KEY=value` byte strings.
pub(crate) fn environment_with(extra: &[(&str, OsString)]) -> Vec<Vec<u8>> {
    let mut env: Vec<Vec<u8>> = std::env::vars_os()
        .filter(|(key, _)| !key.to_string_lossy().starts_with("DOJJAIL_"))
        .chain(extra.iter().map(|(k, v)| ((*k).into(), v.clone())))
        .map(|(key, value)| {
            let mut entry = key.into_vec();
            entry.push(b'=');
            entry.extend(value.into_vec());
            entry
        })
        .collect();
    env.shrink_to_fit();
    env
}
