//! The kernel's floor for each scenario: the same kernel work with no framework around it.
//!
//! The clone-based floors must run while the process is single-threaded (clone with
//! CLONE_NEWUSER fails with EINVAL in a multithreaded process), so `main` runs them first.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sched::{setns, unshare, CloneFlags};

use crate::netlink::RouteSocket;

/// Every namespace a dojjail host gets: user, mount, cgroup, uts, ipc, pid, net.
const ALL_NAMESPACES: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// `struct clone_args` of clone3(2).
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

/// The number of threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// clone3 with every namespace flag. In the child, calls `child` (which must only make
/// async-signal-safe raw calls and end with `_exit`); in the parent, returns the pid.
///
/// # Safety
/// The process must be single-threaded, and `child` must never return.
unsafe fn clone_all_namespaces(child: impl FnOnce()) -> io::Result<libc::pid_t> {
    let mut args = CloneArgs {
        flags: ALL_NAMESPACES,
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
        child();
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    Ok(pid as libc::pid_t)
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
    {}
}

/// One clone3 with every namespace flag of a child that `_exit`s at once, plus waitpid.
pub fn clone_exit() -> io::Result<Duration> {
    let start = Instant::now();
    // SAFETY: main calls us while single-threaded; the child only calls _exit.
    let pid = unsafe { clone_all_namespaces(|| ())? };
    reap(pid);
    Ok(start.elapsed())
}

/// One round trip of a closure to a long-lived worker thread over channels and back: the
/// floor of `Host::exec`.
pub struct Handoff {
    jobs: mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl Handoff {
    pub fn new() -> Self {
        let (jobs, queue) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        thread::spawn(move || {
            for job in queue {
                job();
            }
        });
        Handoff { jobs }
    }

    /// Runs `f` on the worker and returns its value.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(f());
            }))
            .expect("the worker runs");
        result.recv().expect("the worker answers")
    }

    pub fn round_trip(&self) -> Duration {
        let start = Instant::now();
        assert_eq!(self.call(|| std::hint::black_box(1 + 1)), 2);
        start.elapsed()
    }
}

/// The number of online CPUs (not only those this thread may run on).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// Binds the calling thread to `cpu`, or lets it run on every online CPU when `None`.
pub fn pin(cpu: Option<usize>) {
    let mut set = nix::sched::CpuSet::new();
    for one in 0..online_cpus() {
        if cpu.is_none_or(|c| c == one) {
            let _ = set.set(one);
        }
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}

/// fork+exec of `/bin/sh -c true`, output collected: the floor of `exec_shell("true")`.
pub fn sh_true() -> Duration {
    let start = Instant::now();
    let output = Command::new("/bin/sh")
        .args(["-c", "true"])
        .output()
        .expect("/bin/sh runs");
    assert!(output.status.success());
    start.elapsed()
}

/// Phases of one network floor.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetworkFloor {
    /// clone3 of n children with every namespace flag (each waits on a pipe).
    pub clone: Duration,
    /// The bridge namespace, the bridge and n veth pairs in one netlink batch.
    pub links: Duration,
    /// In each child's namespace: the interface up and its address.
    pub addresses: Duration,
    /// Total up.
    pub up: Duration,
    /// Closing the pipe, reaping every child, dropping the namespaces.
    pub down: Duration,
}

/// The kernel work of a network of n hosts, no framework: n children cloned with every
/// namespace flag, a fresh network namespace with a bridge, n veth pairs attached to it
/// with their peers moved into the children's namespaces and the ports brought up (one
/// netlink batch), and each peer brought up with an address from inside its namespace.
/// No edge filter, no loopback, no /etc/hosts.
pub fn network(n: usize) -> io::Result<NetworkFloor> {
    let original = File::open("/proc/thread-self/ns/net")?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors, ours.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (r, w) = (read_end.as_raw_fd(), write_end.as_raw_fd());

    let start = Instant::now();
    let mut children = Vec::with_capacity(n);
    let mut netns = Vec::with_capacity(n);
    let mut bridge_socket = None;
    let result = (|| -> io::Result<NetworkFloor> {
        for _ in 0..n {
            // SAFETY: main calls us while single-threaded; the child makes raw calls only:
            // it waits until the write end closes (EOF), then exits.
            let pid = unsafe {
                clone_all_namespaces(move || {
                    libc::close(w);
                    let mut byte = 0u8;
                    libc::read(r, (&mut byte as *mut u8).cast(), 1);
                })?
            };
            children.push(pid);
            netns.push(File::open(format!("/proc/{pid}/ns/net"))?);
        }
        let cloned = start.elapsed();

        unshare(CloneFlags::CLONE_NEWNET)?;
        let bridge = bridge_socket.insert(RouteSocket::open()?);
        setns(original.as_fd(), CloneFlags::CLONE_NEWNET)?;
        bridge.new_bridge("br0", 2);
        for (i, ns) in netns.iter().enumerate() {
            bridge.new_veth_port(
                &format!("p{i}"),
                16 + i as u32,
                2,
                "eth0",
                16,
                ns.as_raw_fd(),
            );
        }
        for i in 0..n as u32 {
            bridge.quiet_ipv6(16 + i);
            bridge.set_up(16 + i);
        }
        bridge.commit()?;
        let linked = start.elapsed();

        for (i, ns) in netns.iter().enumerate() {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
            let socket = RouteSocket::open();
            setns(original.as_fd(), CloneFlags::CLONE_NEWNET)?;
            let mut socket = socket?;
            socket.quiet_ipv6(16);
            socket.set_up(16);
            let address = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i as u32);
            socket.add_address(16, address, 16);
            socket.commit()?;
        }
        let up = start.elapsed();
        Ok(NetworkFloor {
            clone: cloned,
            links: linked - cloned,
            addresses: up - linked,
            up,
            down: Duration::ZERO,
        })
    })();
    let _ = setns(original.as_fd(), CloneFlags::CLONE_NEWNET);

    let down = Instant::now();
    drop(write_end);
    for pid in &children {
        reap(*pid);
    }
    drop(netns);
    drop(bridge_socket);
    drop(read_end);
    let down = down.elapsed();
    result.map(|floor| NetworkFloor { down, ..floor })
}

/// The literal floor of the links: a fresh network namespace with a bridge and n veth pairs
/// attached to it (ports up), both ends left in that namespace, all in one netlink batch.
pub fn veth_batch(n: usize) -> io::Result<Duration> {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let start = Instant::now();
                unshare(CloneFlags::CLONE_NEWNET)?;
                let mut socket = RouteSocket::open()?;
                socket.new_bridge("br0", 2);
                for i in 0..n {
                    let index = 16 + 2 * i as u32;
                    socket.new_veth_port(
                        &format!("p{i}"),
                        index,
                        2,
                        &format!("e{i}"),
                        index + 1,
                        -1,
                    );
                }
                for i in 0..n as u32 {
                    socket.quiet_ipv6(16 + 2 * i);
                    socket.set_up(16 + 2 * i);
                }
                socket.commit()?;
                Ok(start.elapsed())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the namespace thread panicked")))
    })
}
