//! Commands run as processes inside a host, started by the host's init so they live in
//! every namespace of the host (pid included). Modelled on `std::process::Command`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Output};
use std::sync::Arc;

use super::channel::Channel;
use super::message::{Bytes, Program, SpawnReply, SpawnRequest};
use crate::error::{Error, Result};
use crate::host::{Host, Running};

/// Where a child's standard stream goes.
#[derive(Debug)]
pub struct Stdio(StdioKind);

#[derive(Debug)]
enum StdioKind {
    Inherit,
    Null,
    Piped,
    Fd(OwnedFd),
}

impl Stdio {
    /// The same stream as this process.
    pub fn inherit() -> Self {
        Stdio(StdioKind::Inherit)
    }
    /// `/dev/null`.
    pub fn null() -> Self {
        Stdio(StdioKind::Null)
    }
    /// A pipe to this process, readable (or writable) through [`HostChild`].
    pub fn piped() -> Self {
        Stdio(StdioKind::Piped)
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Self {
        Stdio(StdioKind::Fd(fd))
    }
}

impl From<File> for Stdio {
    fn from(file: File) -> Self {
        Stdio(StdioKind::Fd(file.into()))
    }
}

/// A process to start inside a host: build it with [`Host::command`].
///
/// ```no_run
/// # fn main() -> dojjail_core::Result<()> {
/// let host = dojjail_core::Host::new("host-1");
/// host.run()?;
/// let output = host.command("ps").arg("-e").output()?;
/// assert!(output.status.success());
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct HostCommand {
    host: Host,
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    cwd: Option<OsString>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
}

impl HostCommand {
    pub(crate) fn new(host: Host, program: &OsStr) -> Self {
        HostCommand {
            host,
            program: program.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            stdin: None,
            stdout: None,
            stderr: None,
        }
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (the rest is inherited from this process).
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts from an empty environment.
    pub fn env_clear(&mut self) -> &mut Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The working directory, a path inside the host.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Self {
        self.cwd = Some(dir.as_ref().as_os_str().to_owned());
        self
    }

    /// Standard input (default: inherit for `spawn`/`status`, null for `output`).
    pub fn stdin(&mut self, stdio: Stdio) -> &mut Self {
        self.stdin = Some(stdio);
        self
    }

    /// Standard output (default: inherit for `spawn`/`status`, piped for `output`).
    pub fn stdout(&mut self, stdio: Stdio) -> &mut Self {
        self.stdout = Some(stdio);
        self
    }

    /// Standard error (default: inherit for `spawn`/`status`, piped for `output`).
    pub fn stderr(&mut self, stdio: Stdio) -> &mut Self {
        self.stderr = Some(stdio);
        self
    }

    /// Starts the process.
    pub fn spawn(&mut self) -> Result<HostChild> {
        self.spawn_with_defaults(Stdio::inherit, Stdio::inherit)
    }

    /// Runs the process to completion and collects its output.
    pub fn output(&mut self) -> Result<Output> {
        self.spawn_with_defaults(Stdio::null, Stdio::piped)?
            .wait_with_output()
    }

    /// Runs the process to completion with inherited streams.
    pub fn status(&mut self) -> Result<ExitStatus> {
        self.spawn()?.wait()
    }

    fn spawn_with_defaults(
        &mut self,
        stdin_default: fn() -> Stdio,
        out_default: fn() -> Stdio,
    ) -> Result<HostChild> {
        let running = self.host.running()?;
        let host = self.host.name().to_owned();
        if self.program.is_empty() {
            return Err(Error::Spawn {
                host,
                program: String::new(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the program name is empty",
                ),
            });
        }
        let os = |op| {
            let host = host.clone();
            move |e: std::io::Error| Error::os(&host, op, e)
        };
        let stdin = self.stdin.take().unwrap_or_else(stdin_default);
        let stdout = self.stdout.take().unwrap_or_else(out_default);
        let stderr = self.stderr.take().unwrap_or_else(out_default);
        let log = self.host.log();
        let log = log.as_deref();
        let (child_in, our_in) = prepare(stdin, 0, true, None).map_err(os("setting up stdin"))?;
        let (child_out, our_out) =
            prepare(stdout, 1, false, log).map_err(os("setting up stdout"))?;
        let (child_err, our_err) =
            prepare(stderr, 2, false, log).map_err(os("setting up stderr"))?;
        let request = SpawnRequest {
            program: Program::Path(self.program.as_encoded_bytes().to_vec().into()),
            argv: std::iter::once(&self.program)
                .chain(&self.args)
                .map(|a| a.as_encoded_bytes().to_vec().into())
                .collect(),
            env: self.environment(),
            cwd: self
                .cwd
                .as_ref()
                .map(|c| c.as_encoded_bytes().to_vec().into()),
            extra_fds: 0,
            main: false,
        };
        let fds: [BorrowedFd<'_>; 3] = [child_in.as_fd(), child_out.as_fd(), child_err.as_fd()];
        let program = self.program.to_string_lossy().into_owned();
        let (pid, reply) = running.spawn(self.host.name(), request, &fds, &program)?;
        Ok(HostChild {
            host: self.host.name().to_owned(),
            running,
            pid,
            reply,
            status: None,
            stdin: our_in.map(File::from),
            stdout: our_out.map(File::from),
            stderr: our_err.map(File::from),
        })
    }

    /// The full environment when it differs from the init's, which is this process's.
    fn environment(&self) -> Option<Vec<Bytes>> {
        if !self.env_clear && self.env.is_empty() {
            return None;
        }
        let mut vars: Vec<(OsString, OsString)> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os()
                .filter(|(k, _)| !k.to_string_lossy().starts_with("DOJJAIL_"))
                .collect()
        };
        for (key, value) in &self.env {
            vars.retain(|(k, _)| k != key);
            if let Some(value) = value {
                vars.push((key.clone(), value.clone()));
            }
        }
        Some(
            vars.into_iter()
                .map(|(k, v)| {
                    let mut entry = k.into_encoded_bytes();
                    entry.push(b'=');
                    entry.extend(v.into_encoded_bytes());
                    Bytes(entry)
                })
                .collect(),
        )
    }
}

/// Returns the descriptor the child gets and, for pipes, our end. An inherited output
/// stream goes to the host's log when there is one.
fn prepare(
    stdio: Stdio,
    fd: i32,
    input: bool,
    log: Option<&File>,
) -> std::io::Result<(OwnedFd, Option<OwnedFd>)> {
    match stdio.0 {
        StdioKind::Inherit if log.is_some() => {
            Ok((log.expect("checked").as_fd().try_clone_to_owned()?, None))
        }
        StdioKind::Inherit => {
            // SAFETY: 0, 1 and 2 are open for the life of the process.
            let own = unsafe { BorrowedFd::borrow_raw(fd) };
            Ok((own.try_clone_to_owned()?, None))
        }
        StdioKind::Null => Ok((
            std::fs::OpenOptions::new()
                .read(input)
                .write(!input)
                .open("/dev/null")?
                .into(),
            None,
        )),
        StdioKind::Piped => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok(if input {
                (read, Some(write))
            } else {
                (write, Some(read))
            })
        }
        StdioKind::Fd(fd) => Ok((fd, None)),
    }
}

/// A process running inside a host, started by [`HostCommand::spawn`].
#[derive(Debug)]
pub struct HostChild {
    host: String,
    running: Arc<Running>,
    pid: i32,
    reply: Channel,
    status: Option<ExitStatus>,
    /// Its standard input, when piped.
    pub stdin: Option<File>,
    /// Its standard output, when piped.
    pub stdout: Option<File>,
    /// Its standard error, when piped.
    pub stderr: Option<File>,
}

impl HostChild {
    /// Its pid inside the host's pid namespace.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Sends SIGKILL to the process (if it has not exited yet).
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Sends `signal` to the process (if it has not exited yet).
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        self.running
            .signal(self.pid, signal)
            .map_err(|e| Error::os(&self.host, "signalling a process in the host", e))
    }

    /// Waits for the process to exit. Closes its stdin first, so it does not wait for input.
    /// If the host is killed meanwhile, the process died with it: SIGKILL.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        drop(self.stdin.take());
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = match self.reply.recv::<SpawnReply>() {
            Ok(Some((SpawnReply::Exited { status }, _))) => ExitStatus::from_raw(status),
            _ => ExitStatus::from_raw(libc::SIGKILL),
        };
        self.status = Some(status);
        Ok(status)
    }

    /// Waits for the process and collects whatever it wrote to piped stdout and stderr.
    pub fn wait_with_output(mut self) -> Result<Output> {
        drop(self.stdin.take());
        let (stdout, stderr) = read_both(self.stdout.take(), self.stderr.take())
            .map_err(|e| Error::os(&self.host, "reading the child's output", e))?;
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// Reads two pipes to their ends at once, in this thread (a pipe left unread while the
/// other is drained could fill up and stall the child).
fn read_both(
    mut first: Option<File>,
    mut second: Option<File>,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut outputs = (Vec::new(), Vec::new());
    let mut buffer = vec![0u8; 64 << 10];
    while first.is_some() || second.is_some() {
        let (ready_first, ready_second) = {
            let mut fds = Vec::with_capacity(2);
            for file in [&first, &second].into_iter().flatten() {
                fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            match (&first, &second) {
                (Some(_), Some(_)) => (ready(&fds[0]), ready(&fds[1])),
                (Some(_), None) => (ready(&fds[0]), false),
                _ => (false, ready(&fds[0])),
            }
        };
        for (ready, file, output) in [
            (ready_first, &mut first, &mut outputs.0),
            (ready_second, &mut second, &mut outputs.1),
        ] {
            if !ready {
                continue;
            }
            let Some(reader) = file.as_mut() else {
                continue;
            };
            match reader.read(&mut buffer) {
                Ok(0) => *file = None,
                Ok(n) => output.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(outputs)
}

impl Write for HostChild {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.stdin {
            Some(stdin) => stdin.write(buf),
            None => Err(std::io::Error::other("stdin is not piped")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
