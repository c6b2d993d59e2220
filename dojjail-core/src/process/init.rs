//! A host's init: pid 1 of the host. It sets the host up, then serves spawn requests from
//! the controller, reaps every zombie in the host, and when the controller goes away (or
//! the host's main process ends) it exits, which makes the kernel kill everything left in
//! the host's pid namespace.
//!
//! The init is a fork of a zygote and stays single-threaded. It spawns commands with
//! CLONE_VM | CLONE_VFORK and raw system calls until exec.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::channel::Channel;
use super::message::{
    InitConfig, InitReport, Program, Request, SpawnReply, SpawnRequest, SpawnStep,
};
use super::raw;
use crate::net::link;
use crate::net::netlink::{Mode, RouteSocket};

struct Child {
    reply: Channel,
    main: bool,
}

/// Sets the host up as `config` says, then serves requests on `control`; never returns.
/// One byte on `ids_mapped` (EOF: the mapping failed) says the zygote has mapped our ids.
pub(crate) fn run(config: &InitConfig, control: Channel, ids_mapped: OwnedFd) -> ! {
    let code = match serve(config, control, ids_mapped) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    // SAFETY: _exit skips atexit handlers, which belong to the controller's program.
    unsafe { libc::_exit(code) }
}

fn serve(config: &InitConfig, control: Channel, ids_mapped: OwnedFd) -> io::Result<()> {
    let exe = File::open("/proc/self/exe")?;
    if let Err((step, error)) = set_up(config, ids_mapped) {
        let errno = error.raw_os_error().unwrap_or(libc::EIO);
        control.send(&InitReport::Failed { step, errno }, &[])?;
        return Err(error);
    }
    // Children start with default signal handling (the Rust runtime ignores SIGPIPE here;
    // the init itself sends with MSG_NOSIGNAL).
    // SAFETY: restoring a default disposition has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
    control.send(&InitReport::Ready, &[])?;

    let mut children: HashMap<i32, Child> = HashMap::new();
    let mut controller_present = true;
    loop {
        let (control_ready, signal_ready) = {
            let control_fd = control_borrow(&control);
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if controller_present {
                fds.push(PollFd::new(control_fd, PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            (fds.get(1).is_some_and(ready), ready(&fds[0]))
        };
        if signal_ready {
            while let Ok(Some(_)) = signals.read_signal() {}
            if reap(&mut children) {
                // The host's main process ended: the host ends with it.
                return Ok(());
            }
        }
        if control_ready {
            match control.recv::<Request>() {
                Ok(Some((Request::Spawn(request), fds))) => {
                    spawn(request, fds, &exe, &mut children);
                }
                Ok(Some((Request::Signal { pid, signal }, _))) => {
                    if children.contains_key(&pid) {
                        // SAFETY: kill has no memory-safety preconditions; the pid is a
                        // child we have not reaped, so it cannot have been reused.
                        unsafe { libc::kill(pid, signal) };
                    }
                }
                Ok(None) | Err(_) => {
                    controller_present = false;
                    if !config.persistent {
                        kill_children(&children);
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn control_borrow(control: &Channel) -> std::os::fd::BorrowedFd<'_> {
    // SAFETY: the descriptor is owned by `control`, which outlives the borrow.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(control.as_raw_fd()) }
}

/// Hostname, private mounts, loopback, then (once our ids are mapped) the host's own
/// /etc/hosts. Returns the failed step and the error.
fn set_up(config: &InitConfig, ids_mapped: OwnedFd) -> Result<(), (String, io::Error)> {
    let _ = nix::sys::prctl::set_name(c"dojjail-init");
    // Orphans inside the host become our children even without a pid namespace.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    let step = |what: &'static str| move |e: nix::Error| (what.to_owned(), io::Error::from(e));
    // Capabilities in a new user namespace do not need mapped ids: all of this runs while
    // the zygote writes the maps.
    if config.set_hostname {
        nix::unistd::sethostname(&config.name).map_err(step("set the hostname"))?;
    }
    if config.private_mounts {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(step("make the mount tree private"))?;
        if config.mount_proc {
            mount(
                Some("proc"),
                "/proc",
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(step("mount the host's own /proc"))?;
        }
        mount(
            Some("tmpfs"),
            "/tmp",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        )
        .map_err(step("mount a private /tmp"))?;
    }
    if config.loopback_up {
        RouteSocket::open()
            .and_then(|mut socket| socket.execute(link::set_up(link::LOOPBACK_INDEX), Mode::Change))
            .map_err(|e| ("bring the loopback interface up".to_owned(), e))?;
    }
    // A file created with unmapped ids would belong to nobody (EOVERFLOW).
    let mut byte = [0u8; 1];
    match nix::unistd::read(&ids_mapped, &mut byte) {
        Ok(1) => {}
        // The zygote could not map them and tells the controller why: leave without a
        // report, so the controller finds none to take for the cause.
        // SAFETY: leaving a single-threaded fork without running atexit handlers.
        Ok(_) => unsafe { libc::_exit(1) },
        Err(e) => return Err(step("wait for its user and group ids")(e)),
    }
    drop(ids_mapped);
    if config.private_mounts && std::path::Path::new(HOSTS).exists() {
        private_hosts_file(&config.name)
            .map_err(|e| ("give the host its own /etc/hosts".to_owned(), e))?;
    }
    Ok(())
}

const HOSTS: &str = "/etc/hosts";

/// Bind-mounts a file of the host's own over /etc/hosts. Its source lives on the private
/// /tmp and is unlinked at once, so it is reachable only through /etc/hosts, where the
/// controller rewrites it as the host's networks change; it vanishes with the host.
fn private_hosts_file(name: &str) -> io::Result<()> {
    let source = "/tmp/.dojjail-hosts";
    std::fs::write(source, crate::host::render_hosts_file(name, &[]))?;
    mount(
        Some(source),
        HOSTS,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    std::fs::remove_file(source)
}

/// Reaps every exited child; returns whether the host's main process was among them.
fn reap(children: &mut HashMap<i32, Child>) -> bool {
    let mut main_exited = false;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return main_exited;
        }
        if let Some(child) = children.remove(&pid) {
            let _ = child.reply.send(&SpawnReply::Exited { status }, &[]);
            main_exited |= child.main;
        }
    }
}

fn kill_children(children: &HashMap<i32, Child>) {
    for pid in children.keys() {
        // SAFETY: signalling our own unreaped children.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
}

/// Forks and executes one requested process, answering on its reply channel.
fn spawn(request: SpawnRequest, fds: Vec<OwnedFd>, exe: &File, children: &mut HashMap<i32, Child>) {
    let mut fds = fds.into_iter();
    let Some(reply) = fds.next().map(Channel::from_fd) else {
        return;
    };
    let stdio: Vec<OwnedFd> = fds.collect();
    if stdio.len() != 3 + request.extra_fds {
        let failed = SpawnReply::Failed {
            step: SpawnStep::Descriptors,
            errno: libc::EBADF,
        };
        let _ = reply.send(&failed, &[]);
        return;
    }
    match fork_exec(&request, &stdio, exe) {
        Ok(pid) => {
            if reply.send(&SpawnReply::Spawned { pid }, &[]).is_ok() || request.main {
                children.insert(
                    pid,
                    Child {
                        reply,
                        main: request.main,
                    },
                );
            } else {
                children.insert(pid, Child { reply, main: false });
            }
        }
        Err((step, errno)) => {
            let _ = reply.send(&SpawnReply::Failed { step, errno }, &[]);
        }
    }
}

/// Everything the child reads between clone and exec, prepared by the init because the
/// child shares the init's memory and may only make raw system calls.
struct ChildPlan {
    /// Descriptors for the child's 0, 1, 2, 3, ... in order.
    fds: Vec<RawFd>,
    cwd: Option<CString>,
    /// `None`: execute the init's own binary through `exe`.
    candidates: Option<Vec<CString>>,
    exe: RawFd,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    status_pipe: RawFd,
    /// First descriptor number above all of the above.
    base: usize,
}

/// Stack of a spawned child until it execs.
const CHILD_STACK: usize = 64 << 10;

/// Returns the child's pid once exec succeeded, or the failed step and its errno.
///
/// The child is cloned with CLONE_VM | CLONE_VFORK (what posix_spawn does): no copy of
/// the init's address space, and the init sleeps until the child has exec'd or failed.
fn fork_exec(
    request: &SpawnRequest,
    stdio: &[OwnedFd],
    exe: &File,
) -> Result<i32, (SpawnStep, i32)> {
    let cstring =
        |bytes: &[u8]| CString::new(bytes).map_err(|_| (SpawnStep::Arguments, libc::EINVAL));
    let argv: Vec<CString> = request
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = match &request.env {
        Some(env) => env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        None => std::env::vars_os()
            .filter_map(|(k, v)| {
                use std::os::unix::ffi::OsStringExt;
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend(v.into_vec());
                CString::new(entry).ok()
            })
            .collect(),
    };
    let pointers = |strings: &[CString]| -> Vec<*const libc::c_char> {
        strings
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (status_read, status_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| (SpawnStep::Descriptors, e as i32))?;
    let plan = ChildPlan {
        fds: stdio.iter().map(|fd| fd.as_raw_fd()).collect(),
        cwd: request.cwd.as_deref().map(cstring).transpose()?,
        candidates: match &request.program {
            Program::CurrentExe => None,
            Program::Path(program) => Some(search_path(program, &env)),
        },
        exe: exe.as_raw_fd(),
        argv: pointers(&argv),
        envp: pointers(&env),
        status_pipe: status_write.as_raw_fd(),
        base: 0,
    };
    // Above every descriptor the child reads from, so moving one never overwrites another
    // (the init's own numbers grow with its children: one reply channel each).
    let plan = ChildPlan {
        base: plan
            .fds
            .iter()
            .chain([&plan.exe, &plan.status_pipe])
            .copied()
            .max()
            .unwrap_or(2) as usize
            + 1,
        ..plan
    };
    let mut stack = vec![0u8; CHILD_STACK];
    let top = ((stack.as_mut_ptr() as usize + stack.len()) & !15) as *mut libc::c_void;
    // SAFETY: with CLONE_VFORK the init sleeps until the child execs or exits, so `plan`,
    // `stack` and the strings they point to outlive every use by the child, which makes
    // raw system calls only.
    let pid = unsafe {
        libc::clone(
            spawned_child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &plan as *const ChildPlan as *mut libc::c_void,
        )
    };
    drop(status_write);
    if pid < 0 {
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err((SpawnStep::Exec, errno));
    }
    // The child reports a failure as its step and errno, 4 bytes each.
    let mut bytes = [0u8; 8];
    let read = nix::unistd::read(&status_read, &mut bytes).unwrap_or(0);
    if read == 8 {
        let mut status = 0;
        // SAFETY: reaping the child that failed to exec.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let [s0, s1, s2, s3, e0, e1, e2, e3] = bytes;
        let step = SpawnStep::from_code(u32::from_ne_bytes([s0, s1, s2, s3]));
        Err((step, i32::from_ne_bytes([e0, e1, e2, e3])))
    } else {
        Ok(pid)
    }
}

/// The spawned child: arranges descriptors and executes; on failure it writes the errno to
/// the status pipe. Raw system calls only: it shares the sleeping init's memory.
extern "C" fn spawned_child_main(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the init keeps the plan alive while it sleeps in vfork.
    let plan = unsafe { &*(plan as *const ChildPlan) };
    // SAFETY: raw system calls on descriptors and strings the plan owns.
    unsafe {
        // A host without a pid namespace of its own cannot count on the kernel to end its
        // processes with the init: tie each child's life to the init's.
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
        // Move every descriptor we read from above every target first (sources, the
        // binary, the status pipe), so no target overwrites one of them.
        let count = plan.fds.len();
        let base = plan.base.max(count);
        let high = |fd: RawFd, slot: usize| {
            raw::syscall(
                libc::SYS_dup3,
                [fd as usize, base + slot, libc::O_CLOEXEC as usize, 0, 0, 0],
            )
        };
        let status_pipe = high(plan.status_pipe, count + 1);
        let fail = |step: SpawnStep, errno: isize| -> ! {
            let mut bytes = [0u8; 8];
            bytes[..4].copy_from_slice(&step.code().to_ne_bytes());
            bytes[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
            let pipe = if status_pipe >= 0 {
                status_pipe as usize
            } else {
                plan.status_pipe as usize
            };
            // One write of 8 bytes to a pipe is atomic.
            raw::syscall(libc::SYS_write, [pipe, bytes.as_ptr() as usize, 8, 0, 0, 0]);
            raw::exit(127)
        };
        if status_pipe < 0 {
            fail(SpawnStep::Descriptors, -status_pipe);
        }
        let exe = high(plan.exe, count);
        if exe < 0 {
            fail(SpawnStep::Descriptors, -exe);
        }
        // The init blocks SIGCHLD for its signalfd; exec would keep that mask.
        let empty: u64 = 0;
        raw::syscall(
            libc::SYS_rt_sigprocmask,
            [
                libc::SIG_SETMASK as usize,
                &empty as *const u64 as usize,
                0,
                8,
                0,
                0,
            ],
        );
        for (i, fd) in plan.fds.iter().enumerate() {
            let moved = high(*fd, i);
            if moved < 0 {
                fail(SpawnStep::Descriptors, -moved);
            }
        }
        for target in 0..count {
            let result = raw::syscall(libc::SYS_dup3, [base + target, target, 0, 0, 0, 0]);
            if result < 0 {
                fail(SpawnStep::Descriptors, -result);
            }
        }
        if let Some(cwd) = &plan.cwd {
            let result = raw::syscall(libc::SYS_chdir, [cwd.as_ptr() as usize, 0, 0, 0, 0, 0]);
            if result < 0 {
                fail(SpawnStep::Directory, -result);
            }
        }
        let argv = plan.argv.as_ptr() as usize;
        let envp = plan.envp.as_ptr() as usize;
        match &plan.candidates {
            None => {
                let result = raw::syscall(
                    libc::SYS_execveat,
                    [
                        exe as usize,
                        c"".as_ptr() as usize,
                        argv,
                        envp,
                        libc::AT_EMPTY_PATH as usize,
                        0,
                    ],
                );
                fail(SpawnStep::Exec, -result)
            }
            Some(candidates) => {
                let mut last = libc::ENOENT as isize;
                for candidate in candidates {
                    let result = raw::syscall(
                        libc::SYS_execve,
                        [candidate.as_ptr() as usize, argv, envp, 0, 0, 0],
                    );
                    // Keep looking past missing files, remember more telling errors.
                    if result != -(libc::ENOENT as isize) && result != -(libc::ENOTDIR as isize) {
                        last = -result;
                    }
                }
                fail(SpawnStep::Exec, last)
            }
        }
    }
}

/// The paths to try for `program`: itself when it has a slash, else each `PATH` entry.
fn search_path(program: &[u8], env: &[CString]) -> Vec<CString> {
    if program.contains(&b'/') {
        return CString::new(program).into_iter().collect();
    }
    let path = env
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(|b| *b == b':')
        .map(|dir| {
            let dir = if dir.is_empty() { &b"."[..] } else { dir };
            let mut full = dir.to_vec();
            full.push(b'/');
            full.extend_from_slice(program);
            full
        })
        .filter_map(|full| CString::new(full).ok())
        .collect()
}
