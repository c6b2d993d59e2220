//! The `#[test]` side: starts the test process, waits for it (with a timeout), and turns
//! its report into a pass or a panic with the test's message, each host's output and the
//! topology.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use dojjail_core::__private::ROLE_ENV;

use crate::child::{REPORT_FD, ROLE_TEST, TEST_ENV};
use crate::registration::TestRegistration;
use crate::report::{Outcome, Report};

/// Runs the test registered as `name` in a fresh process; panics with the outcome when it
/// fails. Called by the `#[test]` function that `#[dojjail::test]` generates.
#[doc(hidden)]
#[track_caller]
pub fn run_test(name: &'static str, timeout: Duration) {
    if !inventory::iter::<TestRegistration>
        .into_iter()
        .any(|test| test.name == name)
    {
        panic!("dojjail: no test registered as {name:?}; is #[dojjail::test] on it?");
    }
    let report = nix::sys::memfd::memfd_create(
        c"dojjail-test-report",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )
    .expect("dojjail: memfd_create for the test report");
    let report_fd = report.as_raw_fd();
    let mut command = Command::new("/proc/self/exe");
    command
        .env(ROLE_ENV, ROLE_TEST)
        .env(TEST_ENV, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: dup2 and fcntl are async-signal-safe; this runs in the child between fork
    // and exec.
    unsafe {
        command.pre_exec(move || {
            // If this test thread's process dies (SIGKILL, a crash), the test process and
            // with it the whole topology die too. This thread waits for the test process
            // until it ends, so the signal cannot fire early.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 onto itself would keep close-on-exec set: clear it by hand then.
            let result = if report_fd == REPORT_FD {
                libc::fcntl(REPORT_FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(report_fd, REPORT_FD)
            };
            if result < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .expect("dojjail: cannot start the test process");
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let finished = wait_for(child.id(), timeout);
    if !finished {
        let started = read_reports(&report).into_iter().find_map(|r| match r {
            Report::Started { hosts, topology } => Some((hosts, topology)),
            _ => None,
        });
        // Which hosts still run, looked at before anything is killed.
        let (running, topology) = match started {
            Some((hosts, topology)) => {
                let alive: Vec<String> = hosts
                    .into_iter()
                    .filter(|(_, pid)| *pid != 0 && was_alive(*pid))
                    .map(|(name, _)| name)
                    .collect();
                (alive.join(", "), topology)
            }
            None => (
                "none (the topology was still starting)".to_owned(),
                String::new(),
            ),
        };
        // SIGKILL the test process's group: the hosts die with it (parent-death signal).
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        echo(stdout, stderr);
        panic!(
            "dojjail: test {name} timed out after {timeout:?} and was killed with its topology; \
             hosts still running: {running}\n{}",
            section("topology", &topology)
        );
    }
    // Whatever of the test is left (a persistent host, say) ends with it: nothing outlives
    // a test, and nothing keeps its output pipes open. The test process has exited but is
    // not reaped yet, so its process group id cannot have been reused.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let status = child.wait().expect("dojjail: waiting for the test process");
    echo(stdout, stderr);
    let finished = read_reports(&report).into_iter().find_map(|r| match r {
        Report::Finished {
            outcome,
            hosts_output,
            topology,
        } => Some((outcome, hosts_output, topology)),
        _ => None,
    });
    match finished {
        Some((Outcome::Passed, _, _)) => {}
        Some((Outcome::Failed(message), hosts_output, topology)) => {
            let mut text = message;
            for (host, output) in hosts_output {
                let output = if output.is_empty() {
                    "(no output)\n".to_owned()
                } else {
                    output
                };
                text.push_str(&section(&format!("output of host {host}"), &output));
            }
            text.push_str(&section("topology", &topology));
            panic!("{text}");
        }
        Some((Outcome::TopologyFailed(message), _, _)) => {
            panic!("dojjail: test {name} could not set up its topology: {message}")
        }
        None => panic!(
            "dojjail: the process running test {name} ended without a result ({status}); \
             its stderr is above"
        ),
    }
}

/// Runs an `async` test body to completion on a tokio runtime.
#[doc(hidden)]
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the async test body")
        .block_on(future)
}

/// Waits for process `pid` to exit, up to `timeout`; true when it did. Does not reap it.
fn wait_for(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) } as i32;
    assert!(
        raw >= 0,
        "dojjail: pidfd_open: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `raw` is a fresh descriptor we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        let millis = left.as_millis().min(i32::MAX as u128) as i32;
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::try_from(millis).unwrap()) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(nix::Error::EINTR) => continue,
            Err(error) => panic!("dojjail: poll on the test process: {error}"),
        }
    }
}

fn was_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn read_reports(report: &OwnedFd) -> Vec<Report> {
    let mut file = File::from(report.try_clone().expect("dup of the report memfd"));
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Reads a stream to its end on a thread of its own.
fn drain(mut stream: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    })
}

/// Prints the test process's output through libtest's capture, so it shows with failures
/// (and with `--nocapture`).
fn echo(stdout: thread::JoinHandle<Vec<u8>>, stderr: thread::JoinHandle<Vec<u8>>) {
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !stdout.is_empty() {
        print!("{}", String::from_utf8_lossy(&stdout));
    }
    if !stderr.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&stderr));
    }
}

fn section(title: &str, body: &str) -> String {
    if body.is_empty() {
        return String::new();
    }
    let body = body.trim_end_matches('\n');
    format!("\n\n--- {title} ---\n{body}")
}
