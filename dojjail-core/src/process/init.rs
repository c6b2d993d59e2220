//! A host's init: pid 1 of the host. It sets the host up, then serves spawn requests from
//! the controller, reaps every zombie in the host, and when the controller goes away (or
//! the host's main process ends) it exits, which makes the kernel kill everything left in
//! the host's pid namespace.
//!
//! The init is a re-execution of the controller's binary and stays single-threaded, so it
//! may fork and run Rust in the child before exec.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::channel::Channel;
use super::message::{InitConfig, InitReport, Program, Request, SpawnReply, SpawnRequest};
use crate::net::link;
use crate::net::netlink::{Mode, RouteSocket};

struct Child {
    reply: Channel,
    main: bool,
}

/// Runs the init on `control` and never returns.
pub(crate) fn run(control: Channel) -> ! {
    let code = match serve(control) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    // SAFETY: _exit skips atexit handlers, which belong to the controller's program.
    unsafe { libc::_exit(code) }
}

fn serve(control: Channel) -> io::Result<()> {
    let Some((config, _)) = control.recv::<InitConfig>()? else {
        return Ok(());
    };
    let exe = File::open("/proc/self/exe")?;
    if let Err((step, error)) = set_up(&config) {
        let errno = error.raw_os_error().unwrap_or(libc::EIO);
        control.send(&InitReport::Failed { step, errno }, &[])?;
        return Err(error);
    }
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

/// Hostname, private mounts, loopback. Returns the failed step and the error.
fn set_up(config: &InitConfig) -> Result<(), (String, io::Error)> {
    let _ = nix::sys::prctl::set_name(c"dojjail-init");
    // Orphans inside the host become our children even without a pid namespace.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    if config.set_hostname {
        nix::unistd::sethostname(&config.name)
            .map_err(|e| ("set the hostname".to_owned(), e.into()))?;
    }
    if config.private_mounts {
        let step = |what: &'static str| move |e: nix::Error| (what.to_owned(), io::Error::from(e));
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
        if std::path::Path::new(HOSTS).exists() {
            private_hosts_file(&config.name)
                .map_err(|e| ("give the host its own /etc/hosts".to_owned(), e))?;
        }
    }
    if config.loopback_up {
        RouteSocket::open()
            .and_then(|mut socket| socket.execute(link::set_up(link::LOOPBACK_INDEX), Mode::Change))
            .map_err(|e| ("bring the loopback interface up".to_owned(), e))?;
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
        let _ = reply.send(&SpawnReply::Failed { errno: libc::EBADF }, &[]);
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
        Err(errno) => {
            let _ = reply.send(&SpawnReply::Failed { errno }, &[]);
        }
    }
}

/// Returns the child's pid once exec succeeded, or the errno of the failure.
fn fork_exec(request: &SpawnRequest, stdio: &[OwnedFd], exe: &File) -> Result<i32, i32> {
    let cstring = |bytes: &[u8]| CString::new(bytes).map_err(|_| libc::EINVAL);
    let argv: Vec<CString> = request
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let env: Option<Vec<CString>> = match &request.env {
        Some(env) => Some(env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?),
        None => None,
    };
    let cwd = request.cwd.as_deref().map(cstring).transpose()?;
    let (status_read, status_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e as i32)?;
    // SAFETY: the init is single-threaded, so the child is a complete copy of it.
    match unsafe { nix::unistd::fork() }.map_err(|e| e as i32)? {
        nix::unistd::ForkResult::Child => {
            drop(status_read);
            let errno = exec_child(request, stdio, exe, &argv, env.as_deref(), cwd.as_deref());
            let bytes = errno.to_ne_bytes();
            // SAFETY: writing our errno to the status pipe, then leaving without running
            // any destructors of the init's state.
            unsafe {
                libc::write(status_write.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(127)
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(status_write);
            let mut bytes = [0u8; 4];
            let read = nix::unistd::read(&status_read, &mut bytes).unwrap_or(0);
            if read == 4 {
                let mut status = 0;
                // SAFETY: reaping the child that failed to exec.
                unsafe { libc::waitpid(child.as_raw(), &mut status, 0) };
                Err(i32::from_ne_bytes(bytes))
            } else {
                Ok(child.as_raw())
            }
        }
    }
}

/// In the forked child: arranges descriptors and executes. Returns only on failure.
fn exec_child(
    request: &SpawnRequest,
    stdio: &[OwnedFd],
    exe: &File,
    argv: &[CString],
    env: Option<&[CString]>,
    cwd: Option<&std::ffi::CStr>,
) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: plain system calls on descriptors we own, in a single-threaded child.
    unsafe {
        // Undo the init's signal setup: exec keeps the mask and ignored signals.
        let empty = SigSet::empty();
        libc::sigprocmask(libc::SIG_SETMASK, empty.as_ref(), std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // Move sources out of the way first so a target never overwrites a later source.
        let mut high: Vec<RawFd> = Vec::with_capacity(stdio.len());
        for fd in stdio {
            let moved = libc::fcntl(
                fd.as_raw_fd(),
                libc::F_DUPFD_CLOEXEC,
                64 + stdio.len() as RawFd,
            );
            if moved < 0 {
                return errno();
            }
            high.push(moved);
        }
        for (target, source) in high.iter().enumerate() {
            if libc::dup2(*source, target as RawFd) < 0 {
                return errno();
            }
        }
        if let Some(cwd) = cwd {
            if libc::chdir(cwd.as_ptr()) < 0 {
                return errno();
            }
        }
    }
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let own_env: Vec<CString>;
    let env = match env {
        Some(env) => env,
        None => {
            own_env = std::env::vars_os()
                .filter_map(|(k, v)| {
                    use std::os::unix::ffi::OsStringExt;
                    let mut entry = k.into_vec();
                    entry.push(b'=');
                    entry.extend(v.into_vec());
                    CString::new(entry).ok()
                })
                .collect();
            &own_env
        }
    };
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    match &request.program {
        Program::CurrentExe => {
            // SAFETY: argv and envp are NUL-terminated arrays of C strings that outlive the call.
            unsafe {
                libc::syscall(
                    libc::SYS_execveat,
                    exe.as_raw_fd(),
                    c"".as_ptr(),
                    argv_ptrs.as_ptr(),
                    env_ptrs.as_ptr(),
                    libc::AT_EMPTY_PATH,
                );
            }
            errno()
        }
        Program::Path(program) => {
            let candidates = search_path(program, env);
            let mut last = libc::ENOENT;
            for candidate in candidates {
                // SAFETY: as above.
                unsafe { libc::execve(candidate.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
                let error = errno();
                // Keep looking past missing files, remember more telling errors.
                if error != libc::ENOENT && error != libc::ENOTDIR {
                    last = error;
                }
            }
            last
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

/// Adopts the control descriptor a fresh init finds at `fd`.
///
/// # Safety
/// `fd` must be an open descriptor that nothing else owns.
pub(crate) unsafe fn control_from_raw(fd: RawFd) -> Channel {
    // SAFETY: guaranteed by the caller.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // The descriptor came through exec without CLOEXEC; children must not inherit it.
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Channel::from_fd(fd)
}
