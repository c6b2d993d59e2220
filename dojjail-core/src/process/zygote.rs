//! Zygotes: small re-executions of this binary that fork hosts' inits.
//!
//! A zygote is started once (per core) and stays single-threaded, so it may fork and run
//! Rust in the child: each init is a fork of a zygote, not a new exec of the binary. That
//! spares every host start the exec, the dynamic loader and the runtime's start-up (about
//! a millisecond), and the inits share the zygote's pages, so an idle host costs less
//! memory. The controlling process itself never forks: it is multithreaded.
//!
//! Life and death: inits are forked with CLONE_PARENT, so they are children of the
//! controller, not of the zygote: the controller reaps them (and learns how they ended),
//! and their parent-death signal watches the controller's long-lived spawner thread. A
//! zygote dies with the controller too.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::message::InitConfig;
use super::spawn::{self, Launched};
use super::{dispatch, init};

/// A request to a zygote: fork an init in new namespaces. Attached: the init's end of its
/// control channel.
#[derive(Debug, Serialize, Deserialize)]
struct ForkRequest {
    flags: i32,
    init: InitConfig,
}

/// The zygote's answer.
#[derive(Debug, Serialize, Deserialize)]
enum ForkReply {
    /// The first message of a zygote that has started up.
    Hello,
    /// The init runs; its pidfd is attached.
    Forked { pid: i32 },
    /// clone3 refused: the kernel's answer about the namespaces.
    CloneFailed { errno: i32 },
    /// The init was forked, but its ids could not be mapped. Its pidfd is attached: it is
    /// the controller's child (CLONE_PARENT), so only the controller can reap it.
    Unmapped { errno: i32 },
    /// A step before the clone failed (the zygote's pipe to the init, a missing channel).
    Failed { errno: i32 },
    /// The zygote will not fork at all, for this reason.
    Refused { reason: String },
}

/// Why no init was started.
#[derive(Debug)]
pub(crate) enum ForkError {
    /// The kernel refused the clone: the namespaces could not be created.
    Clone(io::Error),
    /// The init's uid and gid maps could not be written (the init is gone). It may have
    /// failed a setup step first, which would be the cause: its report says.
    Unmapped(io::Error),
    /// The init failed this step of its setup (found in its report after [`Self::Unmapped`]).
    Setup { step: String, errno: i32 },
    /// Another step failed; `step` names it.
    Step {
        step: &'static str,
        error: io::Error,
    },
}

impl ForkError {
    pub(crate) fn step(step: &'static str) -> impl FnOnce(io::Error) -> ForkError {
        move |error| ForkError::Step { step, error }
    }
}

/// Forks an init with `flags` through one of the zygotes (started on first use, restarted
/// if it died) and returns its pid and pidfd. The zygote maps the init's ids and releases
/// it; the init reports on `control` when it is ready, or which step of its setup failed.
pub(crate) fn fork_init(
    flags: CloneFlags,
    init: InitConfig,
    control: Channel,
) -> Result<(i32, OwnedFd), ForkError> {
    const ASK: &str = "asking a zygote to fork the init";
    static ZYGOTES: OnceLock<Vec<Mutex<Option<Zygote>>>> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let zygotes = ZYGOTES.get_or_init(|| {
        // One per core: cloning a network namespace is a millisecond of kernel work that
        // two zygotes do side by side. All start now, so they warm up together: launching
        // returns once the child is cloned, and it execs and starts up on its own.
        let count = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4));
        (0..count)
            .map(|_| Mutex::new(Zygote::launch().ok()))
            .collect()
    });
    let slot = &zygotes[NEXT.fetch_add(1, Ordering::Relaxed) % zygotes.len()];
    let mut zygote = slot.lock().unwrap_or_else(|e| e.into_inner());
    let request = ForkRequest {
        flags: flags.bits(),
        init,
    };
    // A zygote that died (killed from outside) is replaced once.
    for attempt in 0..2 {
        if zygote.is_none() {
            *zygote = Some(Zygote::launch().map_err(ForkError::step(ASK))?);
        }
        let current = zygote.as_mut().expect("started above");
        if !current.greeted {
            if let Err(error) = current.await_hello() {
                *zygote = None;
                return Err(ForkError::step(ASK)(error));
            }
        }
        let channel = &zygote.as_ref().expect("started above").launched.control;
        if let Err(error) = channel.send(&request, &[control.as_fd_borrowed()]) {
            // The zygote was gone before it saw the request: a successor may serve it.
            if attempt == 0 {
                *zygote = None;
                continue;
            }
            return Err(ForkError::step(ASK)(error));
        }
        // From here the request may have been served: never hand `control` to a second
        // zygote, or two inits could share it.
        let answer = channel.recv::<ForkReply>();
        match answer {
            Ok(Some((ForkReply::Forked { pid }, mut fds))) if fds.len() == 1 => {
                return Ok((pid, fds.remove(0)));
            }
            Ok(Some((ForkReply::CloneFailed { errno }, _))) => {
                return Err(ForkError::Clone(io::Error::from_raw_os_error(errno)));
            }
            Ok(Some((ForkReply::Unmapped { errno }, fds))) => {
                for pidfd in &fds {
                    kill_and_reap(pidfd);
                }
                return Err(ForkError::Unmapped(io::Error::from_raw_os_error(errno)));
            }
            Ok(Some((ForkReply::Failed { errno }, _))) => {
                return Err(ForkError::step(ASK)(io::Error::from_raw_os_error(errno)));
            }
            Ok(Some((ForkReply::Refused { reason }, _))) => {
                return Err(ForkError::step(ASK)(io::Error::other(reason)));
            }
            Ok(Some((_, fds))) => {
                // Descriptors on an unexpected reply are inits' pidfds: end those inits.
                for pidfd in &fds {
                    kill_and_reap(pidfd);
                }
                return Err(ForkError::step(ASK)(io::Error::other(
                    "the zygote sent a malformed reply",
                )));
            }
            Ok(None) | Err(_) => {
                if let Some(Zygote { launched: dead, .. }) = zygote.take() {
                    // End it if it still runs, and reap it (it is our child); the next
                    // request starts a successor.
                    kill_and_reap(&dead.pidfd);
                }
                return Err(ForkError::step(ASK)(io::Error::other(
                    "the zygote that forks hosts' inits exited while forking one",
                )));
            }
        }
    }
    unreachable!("the loop returns on its second attempt")
}

/// Kills a child of this process through its pidfd and reaps it.
fn kill_and_reap(pidfd: &OwnedFd) {
    // SAFETY: signalling a child of ours through its pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            0,
            0,
        );
    }
    let _ = nix::sys::wait::waitid(
        nix::sys::wait::Id::PIDFd(pidfd.as_fd()),
        nix::sys::wait::WaitPidFlag::WEXITED,
    );
}

/// A launched zygote, and whether it has said hello yet.
struct Zygote {
    launched: Launched,
    greeted: bool,
}

/// How long a freshly launched zygote may take to start up and say hello.
const HELLO_TIMEOUT_MS: u16 = 10_000;

impl Zygote {
    fn launch() -> io::Result<Zygote> {
        Ok(Zygote {
            launched: spawn::launch(dispatch::ROLE_ZYGOTE, "dojjail-zygote")?,
            greeted: false,
        })
    }

    /// Waits for the zygote's first message. A binary that does not answer is not playing
    /// the zygote: dojjail is in a library the program loaded at run time, so re-executing
    /// the program does not run dojjail's start-up code.
    fn await_hello(&mut self) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let channel = &self.launched.control;
        let mut fds = [PollFd::new(channel.as_fd_borrowed(), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(HELLO_TIMEOUT_MS)).unwrap_or(0);
        let hello = if ready > 0 {
            channel.recv::<ForkReply>()
        } else {
            Ok(None)
        };
        match hello {
            Ok(Some((ForkReply::Hello, _))) => {
                self.greeted = true;
                Ok(())
            }
            _ => {
                // Reap it before its launch memory goes.
                kill_and_reap(&self.launched.pidfd);
                Err(io::Error::other(
                    "this program, re-executed as dojjail's zygote, did not answer: dojjail \
                     must be linked into the program itself (its start-up code does not run \
                     when it comes in a library loaded at run time)",
                ))
            }
        }
    }
}

/// The zygote's main loop: serves fork requests until the controller goes away.
pub(crate) fn run(channel: Channel) -> ! {
    let _ = nix::sys::prctl::set_name(c"dojjail-zygote");
    // The launcher blocked every signal around our clone; the mask survived exec.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    // Forking is safe only while we are single-threaded; a constructor of the program
    // could have started a thread. Then refuse, with the reason, rather than risk it.
    let threads = std::fs::read_dir("/proc/thread-self/..").map_or(1, |tasks| tasks.count());
    if channel.send(&ForkReply::Hello, &[]).is_err() {
        // SAFETY: leaving without running the program's atexit handlers.
        unsafe { libc::_exit(0) }
    }
    let refusal = (threads > 1).then(|| {
        format!(
            "dojjail's zygote found {threads} threads in itself (a constructor of this \
             program starts threads before main) and cannot fork hosts safely; start such \
             threads from main instead"
        )
    });
    loop {
        let (request, fds) = match channel.recv::<ForkRequest>() {
            Ok(Some(message)) => message,
            // The controller is gone (or talks nonsense): so are we.
            _ => {
                // SAFETY: leaving without running the controller program's atexit handlers.
                unsafe { libc::_exit(0) }
            }
        };
        if let Some(reason) = &refusal {
            let refused = ForkReply::Refused {
                reason: reason.clone(),
            };
            if channel.send(&refused, &[]).is_err() {
                // SAFETY: leaving without running the program's atexit handlers.
                unsafe { libc::_exit(0) }
            }
            continue;
        }
        let forked = match fds.into_iter().next() {
            Some(control) => fork(&request, control, &channel),
            None => Err(Unforked::Before(libc::EBADF)),
        };
        let sent = match forked {
            Ok((pid, pidfd)) => channel.send(&ForkReply::Forked { pid }, &[pidfd.as_fd()]),
            Err(Unforked::Before(errno)) => channel.send(&ForkReply::Failed { errno }, &[]),
            Err(Unforked::Clone(errno)) => channel.send(&ForkReply::CloneFailed { errno }, &[]),
            Err(Unforked::Unmapped { pidfd, errno }) => {
                channel.send(&ForkReply::Unmapped { errno }, &[pidfd.as_fd()])
            }
        };
        if sent.is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
    }
}

/// How a fork request failed, in the zygote.
enum Unforked {
    /// Before the clone.
    Before(i32),
    /// The clone itself.
    Clone(i32),
    /// After the clone: the child exists and must be reaped by its parent, the controller.
    Unmapped { pidfd: OwnedFd, errno: i32 },
}

/// Forks one init. The zygote is single-threaded, so the child may run Rust: it becomes
/// the init and never returns.
fn fork(
    request: &ForkRequest,
    control: OwnedFd,
    zygote: &Channel,
) -> Result<(i32, OwnedFd), Unforked> {
    // The zygote writes the child's id maps itself (it has the controller's credentials),
    // while the child already sets up what needs no mapped ids; the child waits on this
    // pipe before anything that does (creating files).
    let (go_read, go_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Unforked::Before(e as i32))?;
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        // CLONE_PARENT: the init becomes a child of the controller (of the long-lived thread
        // that launched this zygote), which reaps it and is the thread its parent-death
        // signal watches; the zygote only does the fork.
        flags: request.flags as u32 as u64 | libc::CLONE_PIDFD as u64 | libc::CLONE_PARENT as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        // With CLONE_PARENT the kernel takes the zygote's own exit signal (SIGCHLD) and
        // wants 0 here.
        exit_signal: 0,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack forks this single-threaded
    // process; `args` outlives the call.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid < 0 {
        let errno = io::Error::last_os_error().raw_os_error();
        return Err(Unforked::Clone(errno.unwrap_or(libc::EIO)));
    }
    if pid > 0 {
        drop(go_read);
        // SAFETY: CLONE_PIDFD stored a descriptor that we now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let pid = pid as i32;
        let mapped = if request.flags & libc::CLONE_NEWUSER != 0 {
            spawn::write_id_maps(pid)
        } else {
            Ok(())
        };
        let released = mapped.and_then(|()| match nix::unistd::write(&go_write, &[1]) {
            // The init has exited already: it failed a setup step, and its report on its
            // control channel says which; the controller reads it there.
            Ok(_) | Err(nix::Error::EPIPE) => Ok(()),
            Err(e) => Err(e.into()),
        });
        return match released {
            Ok(()) => Ok((pid, pidfd)),
            // Dropping `go_write` unread makes the child exit. It is the controller's child,
            // so the controller reaps it, through the pidfd that goes with the reply.
            Err(error) => Err(Unforked::Unmapped {
                pidfd,
                errno: error.raw_os_error().unwrap_or(libc::EIO),
            }),
        };
    }
    // The child: the host's init from here on.
    // SAFETY: plain system calls in a fresh single-threaded child.
    unsafe {
        if !request.init.persistent {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        }
        // The zygote's channel is not the init's business; if the init kept it, the
        // controller could not tell that the zygote died.
        libc::close(zygote.as_raw_fd());
    }
    drop(go_write);
    init::run(
        &request.init,
        Channel::from_fd(control).accepting_spills(),
        go_read,
    )
}

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
