//! Starting processes from the multithreaded controller: hosts' inits (forked by a zygote,
//! see [`zygote`]) and re-executions of this binary (the zygotes themselves), launched
//! posix_spawn-style so no Rust runs in a copy of a multithreaded process.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::{io, ptr, thread};

use super::channel::Channel;
use super::dispatch::ROLE_ENV;
use super::message::{InitConfig, InitReport};
pub(crate) use super::zygote::ForkError;
use super::{raw, zygote};
use crate::ns::Namespaces;

/// The step that writes an init's uid and gid maps, as errors name it.
pub(crate) const WRITING_ID_MAPS: &str = "writing the init's uid and gid maps";

/// The descriptor number of its channel to us inside a launched re-execution.
pub(crate) const LAUNCH_CHANNEL_FD: RawFd = 3;

/// A started (not yet configured) init process.
#[derive(Debug)]
pub(crate) struct StartedInit {
    /// Its pid in the controller's pid namespace.
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub control: Channel,
}

/// Memory a launched child uses between clone and exec. The child shares our address space
/// (CLONE_VM), so this must outlive its exec.
pub(crate) struct LaunchBlock {
    stack: Vec<u8>,
    /// Boxed: the child holds its address while the block moves between threads.
    plan: Box<ExecPlan>,
}

impl std::fmt::Debug for LaunchBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LaunchBlock")
    }
}

/// Everything the child needs between clone and exec, prepared in the parent because the
/// child may not allocate.
struct ExecPlan {
    exe: RawFd,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    child_control: RawFd,
    death_signal: bool,
    /// The open-file limit this process started with, restored in the child.
    nofile: libc::rlimit64,
}

// SAFETY: the raw pointers point into the CStrings owned by the same plan, which are never
// mutated after construction; only the child reads through them.
unsafe impl Send for ExecPlan {}
// SAFETY: as above: nothing is ever written through a shared plan.
unsafe impl Sync for ExecPlan {}

/// The child's stack: it runs a handful of system calls before exec.
const CHILD_STACK: usize = 64 << 10;

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

/// Starts an init in new `namespaces`: a zygote forks it (see [`zygote`]), writes its id
/// maps (when it has a user namespace of its own) and releases it.
pub(crate) fn clone_init(
    namespaces: Namespaces,
    config: InitConfig,
) -> Result<StartedInit, ForkError> {
    let (control, child_control) =
        Channel::pair().map_err(ForkError::step("creating the init's control channel"))?;
    // The zygote forks the init, maps its ids and releases it.
    let (pid, pidfd) = match zygote::fork_init(namespaces.clone_flags(), config, child_control) {
        Ok(forked) => forked,
        // Writing the maps of an init that has just exited fails. It exited because a
        // setup step failed, and then its report is waiting here.
        Err(ForkError::Unmapped(error)) => {
            return Err(match control.try_recv::<InitReport>() {
                Ok(Some((InitReport::Failed { step, errno }, _))) => {
                    ForkError::Setup { step, errno }
                }
                _ => ForkError::step(WRITING_ID_MAPS)(error),
            })
        }
        Err(error) => return Err(error),
    };
    Ok(StartedInit {
        pid,
        pidfd,
        control,
    })
}

/// A freshly launched re-execution of this binary.
pub(crate) struct Launched {
    pub pidfd: OwnedFd,
    /// Our end of the channel the child finds at [`LAUNCH_CHANNEL_FD`].
    pub control: Channel,
    /// Must outlive the child's exec.
    pub _launch: LaunchBlock,
}

/// Launches this binary again as a process playing `role`, from a long-lived thread, dying
/// with this process. The child is cloned with CLONE_VM, like posix_spawn: it shares our
/// memory instead of copying it (no page-table copy, no copy-on-write faults here, no
/// teardown at exec), runs on a stack of its own, makes raw system calls only (no errno,
/// no locks), and reads nothing but the [`LaunchBlock`].
pub(crate) fn launch(role: &str, argv0: &str) -> io::Result<Launched> {
    let exe = current_exe()?;
    let nofile = raise_open_file_limit();
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
    envp.push(CString::new(format!("{ROLE_ENV}={role}")).expect("no NUL"));
    let argv = vec![CString::new(argv0).expect("no NUL")];
    let pointers = |strings: &[CString]| {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(ptr::null()))
            .collect::<Vec<_>>()
    };
    let launch = LaunchBlock {
        stack: vec![0; CHILD_STACK],
        plan: Box::new(ExecPlan {
            exe,
            argv_ptrs: pointers(&argv),
            envp_ptrs: pointers(&envp),
            _argv: argv,
            _envp: envp,
            child_control: child_control.as_raw_fd(),
            death_signal: true,
            nofile,
        }),
    };
    let (_pid, pidfd, launch) = on_spawner_thread(move || {
        let mut launch = launch;
        // SAFETY: the child runs `child_main`, which only makes raw system calls and reads
        // the launch block, which the caller keeps alive until the child has exec'd.
        let (pid, pidfd) = unsafe { clone_child(&mut launch) }?;
        drop(child_control);
        Ok::<_, io::Error>((pid, pidfd, launch))
    })?;
    Ok(Launched {
        pidfd,
        control,
        _launch: launch,
    })
}

/// Raises this process's soft limit on open files to the hard limit, once, and returns the
/// limits it had before. The controller holds two descriptors per host; the usual soft
/// limit of 1024 would stop a network at about 500 hosts.
fn raise_open_file_limit() -> libc::rlimit64 {
    static ORIGINAL: OnceLock<libc::rlimit64> = OnceLock::new();
    *ORIGINAL.get_or_init(|| {
        let mut limit = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit64/setrlimit64 read and write the struct we pass.
        unsafe {
            if libc::getrlimit64(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                let raised = libc::rlimit64 {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                libc::setrlimit64(libc::RLIMIT_NOFILE, &raised);
            }
        }
        limit
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
/// `launch` must stay alive and unmoved-in-memory (its heap parts) until the child has
/// exec'd or exited; the caller must not call this from a signal handler.
unsafe fn clone_child(launch: &mut LaunchBlock) -> io::Result<(i32, OwnedFd)> {
    let mut pidfd: libc::c_int = -1;
    // The stack grows down: start at its (16-byte aligned) top.
    let top = launch.stack.as_mut_ptr() as usize + launch.stack.len();
    let top = (top & !15) as *mut libc::c_void;
    let plan = &*launch.plan as *const ExecPlan as *mut libc::c_void;
    let flags = libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD;
    // The child shares our memory and this thread's TLS until it execs: no signal handler
    // of the program may run in it. Block every signal around the clone (the child keeps
    // the mask through exec; the re-executed role unblocks them), as posix_spawn does.
    let mut saved = nix::sys::signal::SigSet::empty();
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::all()),
        Some(&mut saved),
    );
    // SAFETY: glibc's clone runs child_main on the given stack; with CLONE_PIDFD it stores
    // the pidfd through the parent_tid pointer.
    let pid = unsafe { libc::clone(child_main, top, flags, plan, &mut pidfd as *mut libc::c_int) };
    let cloned = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&saved),
        None,
    );
    cloned?;
    // SAFETY: CLONE_PIDFD stored a descriptor that we now own.
    Ok((pid, unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The child between clone and exec. It shares the parent's memory and thread-local
/// storage, so it only makes raw system calls (no errno writes, no locks, no allocation).
extern "C" fn child_main(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` points to the ExecPlan the parent keeps alive until we exec or exit.
    let plan = unsafe { &*(plan as *const ExecPlan) };
    // SAFETY: raw system calls on our own descriptors and the plan's C strings.
    unsafe {
        // Hosts see the open-file limit their creator started with, not the raised one.
        raw::syscall(
            libc::SYS_prlimit64,
            [
                0,
                libc::RLIMIT_NOFILE as usize,
                &plan.nofile as *const libc::rlimit64 as usize,
                0,
                0,
                0,
            ],
        );
        if plan.death_signal {
            raw::syscall(
                libc::SYS_prctl,
                [
                    libc::PR_SET_PDEATHSIG as usize,
                    libc::SIGKILL as usize,
                    0,
                    0,
                    0,
                    0,
                ],
            );
        }
        if raw::syscall(
            libc::SYS_dup3,
            [
                plan.child_control as usize,
                LAUNCH_CHANNEL_FD as usize,
                0,
                0,
                0,
                0,
            ],
        ) < 0
        {
            raw::exit(126);
        }
        raw::syscall(
            libc::SYS_execveat,
            [
                plan.exe as usize,
                c"".as_ptr() as usize,
                plan.argv_ptrs.as_ptr() as usize,
                plan.envp_ptrs.as_ptr() as usize,
                libc::AT_EMPTY_PATH as usize,
                0,
            ],
        );
        raw::exit(127)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs `job` on one of a few threads that live as long as the process. Hosts are cloned
/// there because their parent-death signal fires when the *thread* that created them exits
/// (prctl(2)): a host started from a short-lived thread would die with it. One thread per
/// core, because cloning a network namespace costs about a millisecond of kernel time and
/// parallel callers (a network starting many hosts) should not queue behind one thread.
fn on_spawner_thread<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> R {
    static SPAWNERS: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNERS.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = std::sync::Arc::new(Mutex::new(receiver));
        let count = thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        for index in 0..count {
            let receiver = receiver.clone();
            thread::Builder::new()
                .name(format!("dojjail-spawner-{index}"))
                .spawn(move || loop {
                    let job = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("cannot start a dojjail spawner thread");
        }
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
    use std::io::Write;
    let write = |file: &str, text: &str| {
        crate::ns::open_proc(&format!("{pid}/{file}"), true)?.write_all(text.as_bytes())
    };
    write("uid_map", &format!("0 {uid} 1"))?;
    let mapping = format!("0 {gid} 1");
    write("gid_map", &mapping).or_else(|_| {
        // Without CAP_SETGID over the parent's groups, setgroups must be denied first.
        write("setgroups", "deny")?;
        write("gid_map", &mapping)
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
