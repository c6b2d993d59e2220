//! [`Host`]: an isolated machine made of Linux namespaces, with an init of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::exec::WorkerPool;
use crate::ns::{self, NamespaceFds, Namespaces};
use crate::process::channel::Channel;
use crate::process::command::HostCommand;
use crate::process::dispatch::{
    panic_message, ARGS_ENV, ENTRYPOINT_ENV, ROLE_ENTRYPOINT, ROLE_ENV,
};
use crate::process::message::{
    Bytes, EntrypointOutcome, InitConfig, InitReport, Program, Request, SpawnReply, SpawnRequest,
    SpawnStep,
};
use crate::process::registry::{self, Entrypoint};
use crate::process::spawn::{self, ForkError, StartedInit, WRITING_ID_MAPS};

/// The longest hostname Linux accepts (HOST_NAME_MAX).
const MAX_NAME_LEN: usize = 64;

/// An isolated host: its own user, mount, cgroup, uts, ipc, pid and net namespaces (by
/// default), an init process as pid 1, and optionally an [entrypoint](Host::entrypoint) as
/// its main process.
///
/// `Host` is a cheap handle: clones share the same host, and it may be used from several
/// threads at once. When the last handle is dropped the host is killed, unless it is
/// [persistent](Host::persistent); it also dies with the process that started it.
///
/// ```no_run
/// # fn main() -> dojjail_core::Result<()> {
/// use dojjail_core::Host;
///
/// let host = Host::new("host-1");
/// host.run()?;
/// assert_eq!(host.exec(|| 1 + 1)?, 2);
/// let output = host.exec_shell("hostname")?;
/// assert_eq!(output.stdout, b"host-1\n");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

/// Whether hosts started from now on keep their output for [`Host::recent_output`].
static CAPTURE_OUTPUT: AtomicBool = AtomicBool::new(false);

/// From now on, hosts send the output of their entrypoint and of commands with inherited
/// streams to a log of their own instead of this process's stdout and stderr. Not public
/// API: the test runner turns it on so a failing test can show each host's output.
#[doc(hidden)]
pub fn capture_output(capture: bool) {
    CAPTURE_OUTPUT.store(capture, Ordering::Relaxed);
}

struct HostInner {
    name: String,
    /// The entrypoint (name, encoded arguments) of a host that is ready but whose main
    /// process has not started yet.
    pending_main: Mutex<Option<(String, String)>>,
    /// Where the entrypoint's and inherited commands' output goes when captured (a memfd).
    log: Mutex<Option<Arc<File>>>,
    /// How many network interfaces (eth0, eth1, ...) networks have given the host.
    interfaces: AtomicU32,
    /// Lines for /etc/hosts (`address\tname`), by network.
    hosts_entries: Mutex<BTreeMap<u64, Arc<str>>>,
    /// Who wants the host running. Lock order: `hosts_entries`, `state`, `claims`.
    claims: Mutex<Claims>,
    config: Mutex<Config>,
    state: Mutex<State>,
    main: Mutex<MainSlot>,
    workers: WorkerPool,
}

#[derive(Clone)]
struct Config {
    namespaces: Namespaces,
    persistent: bool,
    entrypoint: Option<EntrypointCall>,
}

#[derive(Clone)]
struct EntrypointCall {
    name: String,
    /// The encoded arguments, or why they could not be encoded.
    args: std::result::Result<String, String>,
}

enum State {
    Created,
    Running(Arc<Running>),
    Stopped { reason: String },
}

/// The entrypoint's result, until `wait` takes it.
enum MainSlot {
    None,
    Pending { reply: Channel, result: File },
    Taken,
}

/// A running host's init. It holds two descriptors per host and no more (a pidfd and the
/// control channel): every init cloned later copies, then closes, the controller's whole
/// descriptor table, so descriptors kept per host would make each start slower.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) pid: i32,
    pidfd: OwnedFd,
    control: Channel,
    /// Which namespaces the host has of its own.
    namespaces: Namespaces,
}

impl Host {
    /// A host named `name`, not yet running. The name becomes its hostname; it must be 1
    /// to 64 bytes without NUL or `/` (checked by [`Host::run`]).
    pub fn new(name: impl Into<String>) -> Self {
        Host {
            inner: Arc::new(HostInner {
                name: name.into(),
                pending_main: Mutex::new(None),
                log: Mutex::new(None),
                interfaces: AtomicU32::new(0),
                hosts_entries: Mutex::new(BTreeMap::new()),
                claims: Mutex::new(Claims::default()),
                config: Mutex::new(Config {
                    namespaces: Namespaces::ALL,
                    persistent: false,
                    entrypoint: None,
                }),
                state: Mutex::new(State::Created),
                main: Mutex::new(MainSlot::None),
                workers: WorkerPool::default(),
            }),
        }
    }

    /// Which namespaces the host gets of its own (default: [`Namespaces::ALL`]). Takes
    /// effect at [`Host::run`].
    pub fn namespaces(self, namespaces: Namespaces) -> Self {
        lock(&self.inner.config).namespaces = namespaces;
        self
    }

    /// A persistent host outlives the process that started it and the drop of its last
    /// handle; only [`Host::kill`] (or its entrypoint returning) ends it.
    pub fn persistent(self, persistent: bool) -> Self {
        lock(&self.inner.config).persistent = persistent;
        self
    }

    /// Makes a `#[dojjail::host]` function without arguments the host's main process. The
    /// host stops when it returns; [`Host::wait`] gives its value.
    ///
    /// ```ignore
    /// #[dojjail::host]
    /// fn answer() -> u32 {
    ///     42
    /// }
    ///
    /// # fn main() -> dojjail::Result<()> {
    /// let host = dojjail::Host::new("calc").entrypoint(answer);
    /// host.run()?;
    /// assert_eq!(host.wait::<u32>()?, 42);
    /// # Ok(())
    /// # }
    /// ```
    pub fn entrypoint<E: Entrypoint<Args = ()>>(self, entrypoint: E) -> Self {
        self.entrypoint_with(entrypoint, ())
    }

    /// Like [`Host::entrypoint`], for a function that takes arguments (as a tuple).
    pub fn entrypoint_with<E: Entrypoint>(self, _entrypoint: E, args: E::Args) -> Self {
        self.entrypoint_named(E::NAME, &args)
    }

    /// Makes the entrypoint registered under `name` the host's main process, with `args`
    /// encoded as JSON. An unknown name is reported by [`Host::run`].
    pub fn entrypoint_named(self, name: &str, args: &impl Serialize) -> Self {
        let args = serde_json::to_string(args).map_err(|e| e.to_string());
        lock(&self.inner.config).entrypoint = Some(EntrypointCall {
            name: name.to_owned(),
            args,
        });
        self
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The pid of the host's init as seen from this process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &*lock(&self.inner.state) {
            State::Running(running) => Some(running.pid as u32),
            _ => None,
        }
    }

    /// Whether the host is running now.
    pub fn is_running(&self) -> bool {
        self.running().is_ok()
    }

    /// Starts the host; does nothing if it is already running.
    ///
    /// Afterwards its hostname is its name, uid 0 inside is `root`, `lo` is up, and it has
    /// its own `/proc` and `/tmp`. Fails with a typed error, leaving nothing behind, when
    /// the name is invalid, the entrypoint is not registered, or the machine does not
    /// allow namespaces.
    pub fn run(&self) -> Result<()> {
        if let Some(starting) = self.begin_run(None)? {
            starting.finish()?;
        }
        self.start_pending_main()
    }

    /// Starts the entrypoint of a host that [`Starting::finish`] left ready without it
    /// (a network starts entrypoints only once their hosts are wired). If it cannot start,
    /// the host is killed.
    pub(crate) fn start_pending_main(&self) -> Result<()> {
        let Some((entrypoint, args)) = lock(&self.inner.pending_main).take() else {
            return Ok(());
        };
        let running = self.running()?;
        if let Err(error) = self.start_main(&running, entrypoint, args) {
            let _ = self.kill();
            return Err(error);
        }
        Ok(())
    }

    /// The first half of [`Host::run`]: clones the init, with its configuration, without
    /// waiting for it. `None` when the host runs already. Starting many hosts overlaps
    /// their set-up when every `begin_run` comes before the first `finish`. A `network`
    /// that starts the host (or finds it running) uses it from then on, until it leaves.
    pub(crate) fn begin_run(&self, network: Option<u64>) -> Result<Option<Starting<'_>>> {
        let state = lock(&self.inner.state);
        // Claimed under the state lock, so no failing network's abandon comes in between:
        // here when the host runs already, else in `finish` once it does.
        let claim = network.unwrap_or(USER_CLAIM);
        match &*state {
            State::Running(_) => {
                lock(&self.inner.claims).users.insert(claim);
                return Ok(None);
            }
            State::Stopped { reason } => return Err(self.stopped(reason)),
            State::Created => {}
        }
        validate_name(&self.inner.name)?;
        let config = lock(&self.inner.config).clone();
        let entrypoint = match &config.entrypoint {
            Some(call) => Some(self.check_entrypoint(call)?),
            None => None,
        };
        ns::ensure_privileged()?;
        if CAPTURE_OUTPUT.load(Ordering::Relaxed) {
            let log = nix::sys::memfd::memfd_create(
                c"dojjail-host-output",
                nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
            )
            .map_err(|e| Error::os(&self.inner.name, "memfd_create for the host's output", e))?;
            *lock(&self.inner.log) = Some(Arc::new(File::from(log)));
        }
        let running = self.clone_init(&config)?;
        let starting = Starting {
            host: self,
            state,
            running: Some(running),
            entrypoint,
            claim,
        };
        starting.prestart_worker();
        Ok(Some(starting))
    }

    fn check_entrypoint(&self, call: &EntrypointCall) -> Result<(String, String)> {
        if registry::find(&call.name).is_none() {
            return Err(Error::UnknownEntrypoint {
                name: call.name.clone(),
                known: registry::known_names(),
            });
        }
        match &call.args {
            Ok(args) => Ok((call.name.clone(), args.clone())),
            Err(message) => Err(Error::Json {
                host: self.inner.name.clone(),
                what: "the entrypoint's arguments",
                source: serde::ser::Error::custom(message),
            }),
        }
    }

    /// Clones the init and opens its namespaces (they exist as soon as clone3 returns).
    fn clone_init(&self, config: &Config) -> Result<Running> {
        let name = &self.inner.name;
        let namespaces = config.namespaces;
        let init_config = InitConfig {
            name: name.clone(),
            set_hostname: namespaces.contains(Namespaces::UTS),
            private_mounts: namespaces.contains(Namespaces::MOUNT),
            mount_proc: namespaces.contains(Namespaces::MOUNT | Namespaces::PID),
            loopback_up: namespaces.contains(Namespaces::NET),
            persistent: config.persistent,
        };
        let StartedInit {
            pid,
            pidfd,
            control,
        } = spawn::clone_init(namespaces, init_config).map_err(|e| match e {
            ForkError::Clone(error) => ns::refused(name, namespaces, error),
            ForkError::Setup { step, errno } => Error::Setup {
                host: name.clone(),
                step,
                source: std::io::Error::from_raw_os_error(errno),
            },
            ForkError::Unmapped(error) => Error::os(name, WRITING_ID_MAPS, error),
            ForkError::Step { step, error } => Error::os(name, step, error),
        })?;
        Ok(Running {
            pid,
            pidfd,
            control,
            namespaces,
        })
    }

    /// Starts the entrypoint as the host's main process, its result going to a memfd.
    fn start_main(&self, running: &Running, entrypoint: String, args: String) -> Result<()> {
        let name = &self.inner.name;
        let result = nix::sys::memfd::memfd_create(
            c"dojjail-entrypoint-result",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| Error::os(name, "memfd_create for the entrypoint's result", e))?;
        let result = File::from(result);
        let argv0 = std::env::args_os()
            .next()
            .unwrap_or_else(|| "dojjail".into());
        let env = spawn::environment_with(&[
            (ROLE_ENV, ROLE_ENTRYPOINT.into()),
            (ENTRYPOINT_ENV, entrypoint.into()),
            (ARGS_ENV, args.into()),
        ]);
        let request = SpawnRequest {
            program: Program::CurrentExe,
            argv: vec![argv0.into_encoded_bytes().into()],
            env: Some(env.into_iter().map(Bytes::from).collect()),
            cwd: None,
            extra_fds: 1,
            main: true,
        };
        let null = File::open("/dev/null").map_err(|e| Error::os(name, "open /dev/null", e))?;
        let log = self.log();
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let (out, err) = match &log {
            Some(log) => (log.as_fd(), log.as_fd()),
            None => (stdout.as_fd(), stderr.as_fd()),
        };
        let fds = [null.as_fd(), out, err, result.as_fd()];
        let (_pid, reply) = running.spawn(name, request, &fds, "the entrypoint")?;
        *lock(&self.inner.main) = MainSlot::Pending { reply, result };
        Ok(())
    }

    /// Runs `f` inside the host and returns its value.
    ///
    /// `f` runs on a thread of this process that has entered the host's network, uts and
    /// mount namespaces: it sees the host's interfaces, hostname and files, may borrow from
    /// the caller, and a tokio runtime built inside it does its networking in the host.
    /// It is not in the host's pid namespace: the `/proc` it sees is the host's, where
    /// `/proc/self` does not name the calling thread.
    /// A panic in `f` comes back as [`Error::ExecPanicked`]; the host stays usable.
    pub fn exec<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let running = self.running()?;
        match self.inner.workers.run(
            &self.inner.name,
            || running.open_namespaces(&self.inner.name),
            f,
        )? {
            Ok(value) => Ok(value),
            Err(panic) => Err(Error::ExecPanicked {
                host: self.inner.name.clone(),
                message: panic_message(&*panic),
            }),
        }
    }

    /// A command that runs `program` as a process inside all of the host's namespaces,
    /// pid included, as the host's root.
    pub fn command(&self, program: impl AsRef<OsStr>) -> HostCommand {
        HostCommand::new(self.clone(), program.as_ref())
    }

    /// Runs `command` with `/bin/sh -c` inside the host and collects its output.
    pub fn exec_shell(&self, command: impl AsRef<OsStr>) -> Result<Output> {
        self.command("/bin/sh").arg("-c").arg(command).output()
    }

    /// Waits for the host's entrypoint to return and gives its value, decoded as `T`.
    ///
    /// Errors: the host has no entrypoint, its value was already taken by an earlier
    /// `wait`, the entrypoint panicked or was killed, or the value is not a `T`.
    pub fn wait<T: DeserializeOwned>(&self) -> Result<T> {
        let name = &self.inner.name;
        if let State::Created = &*lock(&self.inner.state) {
            return Err(Error::NotRunning { host: name.clone() });
        }
        let slot = std::mem::replace(&mut *lock(&self.inner.main), MainSlot::Taken);
        let (reply, mut result) = match slot {
            MainSlot::Pending { reply, result } => (reply, result),
            MainSlot::None => {
                *lock(&self.inner.main) = MainSlot::None;
                return Err(Error::NothingToWait {
                    host: name.clone(),
                    reason: "it has no entrypoint; give it one with Host::entrypoint",
                });
            }
            MainSlot::Taken => {
                return Err(Error::NothingToWait {
                    host: name.clone(),
                    reason: "its entrypoint's result was already taken by an earlier wait",
                });
            }
        };
        let status = match reply.recv::<SpawnReply>() {
            Ok(Some((SpawnReply::Exited { status }, _))) => describe_status(status),
            _ => "the host was killed".to_owned(),
        };
        let mut bytes = Vec::new();
        result
            .rewind()
            .and_then(|()| result.read_to_end(&mut bytes))
            .map_err(|e| Error::os(name, "reading the entrypoint's result", e))?;
        if bytes.is_empty() {
            return Err(Error::EntrypointFailed {
                host: name.clone(),
                status,
            });
        }
        let json = |what, source| Error::Json {
            host: name.clone(),
            what,
            source,
        };
        let outcome: EntrypointOutcome =
            serde_json::from_slice(&bytes).map_err(|e| json("the entrypoint's outcome", e))?;
        match outcome {
            EntrypointOutcome::Returned(value) => {
                serde_json::from_value(value).map_err(|e| json("the entrypoint's return value", e))
            }
            EntrypointOutcome::Panicked(message) => Err(Error::EntrypointPanicked {
                host: name.clone(),
                message,
            }),
            EntrypointOutcome::BadArguments(message) => Err(Error::Json {
                host: name.clone(),
                what: "the entrypoint's arguments",
                source: serde::de::Error::custom(message),
            }),
        }
    }

    /// Kills the host and everything in it, and waits until they are gone. Killing a host
    /// that is not running does nothing.
    pub fn kill(&self) -> Result<()> {
        let mut state = lock(&self.inner.state);
        if let State::Running(running) = &*state {
            running.kill();
            *state = State::Stopped {
                reason: "killed".into(),
            };
            self.inner.workers.clear();
        }
        Ok(())
    }

    /// Network `network` no longer uses the host. If the host was only kept running for it
    /// after another network abandoned its start, it is now new again.
    pub(crate) fn leave(&self, network: u64) {
        let entries = lock(&self.inner.hosts_entries);
        let state = lock(&self.inner.state);
        let mut claims = lock(&self.inner.claims);
        claims.users.remove(&network);
        if claims.users.is_empty() && claims.abandoned && !claims.kept {
            drop(claims);
            self.make_new(state, entries);
        }
    }

    /// A network that uses the host has started: the host is wanted from now on, whoever
    /// started it.
    pub(crate) fn keep(&self) {
        lock(&self.inner.claims).kept = true;
    }

    /// Undoes a start that network `network` began and could not complete: the network
    /// leaves the host, and unless someone else uses it (another network, or its user
    /// through [`Host::run`]), the host is killed and new again, so the same `Host` can run
    /// later (as after a failed [`Host::run`]); otherwise that happens when the last of
    /// them leaves without having started. Returns whether it happened now.
    pub(crate) fn abandon_start(&self, network: u64) -> bool {
        let entries = lock(&self.inner.hosts_entries);
        let state = lock(&self.inner.state);
        let mut claims = lock(&self.inner.claims);
        claims.users.remove(&network);
        if !claims.users.is_empty() {
            claims.abandoned = true;
            return false;
        }
        drop(claims);
        self.make_new(state, entries);
        true
    }

    /// Kills the init, if any, and forgets everything of the run.
    fn make_new(
        &self,
        mut state: MutexGuard<'_, State>,
        mut entries: MutexGuard<'_, BTreeMap<u64, Arc<str>>>,
    ) {
        if let State::Running(running) = &*state {
            running.kill();
        }
        *state = State::Created;
        *lock(&self.inner.claims) = Claims::default();
        self.inner.workers.clear();
        *lock(&self.inner.pending_main) = None;
        *lock(&self.inner.main) = MainSlot::None;
        *lock(&self.inner.log) = None;
        entries.clear();
        self.inner.interfaces.store(0, Ordering::Relaxed);
    }

    /// Waits until a process in the host listens on TCP `port` (IPv4 or IPv6, any address),
    /// without sleeping blindly: it watches the host's socket table. Fails with
    /// [`Error::Timeout`] after `timeout`, or when the host stops.
    pub fn wait_listening(&self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Read from this process's /proc: inside the host's mount namespace /proc belongs
            // to the host's pid namespace, where this thread has no /proc/thread-self.
            let init = self.running()?.pid;
            if is_listening(init, port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    host: self.inner.name.clone(),
                    what: format!("something to listen on TCP port {port}"),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The last `max_bytes` of what the host's entrypoint and its commands with inherited
    /// streams wrote, when output capture is on (the test harness turns it on); `None`
    /// otherwise.
    pub fn recent_output(&self, max_bytes: usize) -> Option<String> {
        use std::os::unix::fs::FileExt;
        let log = self.log()?;
        let len = log.metadata().ok()?.len();
        let start = len.saturating_sub(max_bytes as u64);
        let mut bytes = vec![0; (len - start) as usize];
        log.read_exact_at(&mut bytes, start).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The host's output log, when output is captured.
    pub(crate) fn log(&self) -> Option<Arc<File>> {
        lock(&self.inner.log).clone()
    }

    /// A number that identifies the host for as long as it exists (for lock ordering).
    pub(crate) fn address(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Whether both handles are the same host.
    pub(crate) fn same_as(&self, other: &Host) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The next free network interface number of the host (eth0, eth1, ...).
    pub(crate) fn allocate_interface(&self) -> u32 {
        self.inner.interfaces.fetch_add(1, Ordering::Relaxed)
    }

    /// Gives interface number `k` back after a failed attach, if no later one was handed
    /// out meanwhile (then `k` stays a gap: names stay unique).
    pub(crate) fn release_interface(&self, k: u32) {
        let _ =
            self.inner
                .interfaces
                .compare_exchange(k + 1, k, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub(crate) fn has_namespace(&self, namespace: Namespaces) -> bool {
        lock(&self.inner.config).namespaces.contains(namespace)
    }

    /// Replaces the names network `network` contributes to the host's /etc/hosts, and
    /// rewrites the file.
    pub(crate) fn set_hosts_entries(&self, network: u64, block: Arc<str>) -> Result<()> {
        if !self.has_namespace(Namespaces::MOUNT) {
            return Ok(());
        }
        // The lock also orders the writes of networks changing at once.
        let mut all = lock(&self.inner.hosts_entries);
        if block.is_empty() {
            all.remove(&network);
        } else {
            all.insert(network, block);
        }
        let blocks: Vec<&str> = all.values().map(|block| &**block).collect();
        let content = render_hosts_file(&self.inner.name, &blocks);
        self.exec(|| {
            // Grow-then-trim, so a reader inside the host never sees an empty file.
            let file = std::fs::OpenOptions::new().write(true).open("/etc/hosts")?;
            std::os::unix::fs::FileExt::write_all_at(&file, content.as_bytes(), 0)?;
            file.set_len(content.len() as u64)
        })?
        .map_err(|e| Error::os(&self.inner.name, "writing the host's /etc/hosts", e))
    }

    /// The running host, or why it is not running.
    pub(crate) fn running(&self) -> Result<Arc<Running>> {
        let mut state = lock(&self.inner.state);
        match &*state {
            State::Created => Err(Error::NotRunning {
                host: self.inner.name.clone(),
            }),
            State::Stopped { reason } => Err(self.stopped(reason)),
            State::Running(running) => match running.exit_status() {
                None => Ok(running.clone()),
                Some(reason) => {
                    let error = self.stopped(&reason);
                    *state = State::Stopped { reason };
                    self.inner.workers.clear();
                    Err(error)
                }
            },
        }
    }

    fn stopped(&self, reason: &str) -> Error {
        Error::Stopped {
            host: self.inner.name.clone(),
            reason: reason.to_owned(),
        }
    }
}

/// Who wants a host running.
#[derive(Default)]
struct Claims {
    /// Networks that started the host or found it running and have not let it go, and
    /// [`USER_CLAIM`] once its user ran it.
    users: BTreeSet<u64>,
    /// A network that started the host failed, and left it running only for the others.
    abandoned: bool,
    /// A network that uses the host has started: it stays, whatever becomes of the others.
    kept: bool,
}

/// The claim of a host's user, who called [`Host::run`]; network ids start at 1.
const USER_CLAIM: u64 = 0;

/// How long [`Starting::finish`] spins for the init's report before it sleeps.
const READY_SPIN: Duration = Duration::from_micros(250);

/// A host between the two halves of [`Host::run`]. Dropping it unfinished kills the init.
pub(crate) struct Starting<'a> {
    host: &'a Host,
    state: MutexGuard<'a, State>,
    running: Option<Running>,
    entrypoint: Option<(String, String)>,
    /// Who is starting it: a network's id, or [`USER_CLAIM`].
    claim: u64,
}

impl Starting<'_> {
    fn running(&self) -> &Running {
        self.running
            .as_ref()
            .expect("present until finished or dropped")
    }

    /// While the init sets up, a first exec worker enters its namespaces.
    fn prestart_worker(&self) {
        let name = self.host.name();
        let running = self.running();
        // The namespaces exist as soon as clone returns: a worker can enter them while the
        // init sets up (mounts made later show in the same mount namespace). If the init
        // failed already, `finish` reads why from its report.
        if let Ok(namespaces) = running.open_namespaces(name) {
            self.host.inner.workers.prestart(name, namespaces);
        }
    }

    /// The second half of [`Host::run`]: waits until the init is ready. The entrypoint, if
    /// any, waits for [`Host::start_pending_main`].
    pub(crate) fn finish(mut self) -> Result<()> {
        let name = self.host.name().to_owned();
        let running = self.running();
        let lost = |e: std::io::Error| Error::protocol(&name, e.to_string());
        // The init is in its last setup steps by now: its report comes sooner than a
        // wake-up from another CPU would.
        let report = running.control.recv_spinning::<InitReport>(READY_SPIN);
        match report.map_err(lost)? {
            Some((InitReport::Ready, _)) => {}
            Some((InitReport::Failed { step, errno }, _)) => {
                return Err(Error::Setup {
                    host: name,
                    step,
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
            None => {
                return Err(Error::protocol(
                    &name,
                    format!("the init exited during setup ({})", running.wait_exit()),
                ));
            }
        }
        *lock(&self.host.inner.pending_main) = self.entrypoint.take();
        lock(&self.host.inner.claims).users.insert(self.claim);
        let running = self.running.take().expect("present until finished");
        *self.state = State::Running(Arc::new(running));
        Ok(())
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.kill();
            self.host.inner.workers.clear();
        }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.inner.name)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Drop for HostInner {
    fn drop(&mut self) {
        let persistent = lock(&self.config).persistent;
        if let State::Running(running) = &*lock(&self.state) {
            if !persistent {
                running.kill();
            }
        }
    }
}

/// The error of a process that could not start, saying which step failed.
fn spawn_failure(step: SpawnStep, errno: i32, cwd: Option<&[u8]>) -> std::io::Error {
    let os = std::io::Error::from_raw_os_error(errno);
    let explained = |text: String| std::io::Error::new(os.kind(), text);
    match step {
        SpawnStep::Exec => os,
        SpawnStep::Arguments => explained(
            "an argument, an environment entry or the working directory contains a NUL byte".into(),
        ),
        SpawnStep::Descriptors => explained(format!("arranging its standard streams: {os}")),
        SpawnStep::Directory => explained(format!(
            "entering its working directory {:?}: {os}",
            String::from_utf8_lossy(cwd.unwrap_or_default())
        )),
    }
}

impl Running {
    /// Starts a process through the init. `fds` are stdin, stdout, stderr and extras.
    pub(crate) fn spawn(
        &self,
        host: &str,
        request: SpawnRequest,
        fds: &[BorrowedFd<'_>],
        what: &str,
    ) -> Result<(i32, Channel)> {
        let lost = |e: std::io::Error| Error::protocol(host, e.to_string());
        let cwd = request.cwd.clone();
        let (ours, theirs) = Channel::pair().map_err(|e| Error::os(host, "socketpair", e))?;
        let theirs = theirs.into_fd();
        let mut all = Vec::with_capacity(fds.len() + 1);
        all.push(theirs.as_fd());
        all.extend_from_slice(fds);
        self.control
            .send(&Request::Spawn(request), &all)
            .map_err(lost)?;
        drop(theirs);
        match ours.recv::<SpawnReply>().map_err(lost)? {
            Some((SpawnReply::Spawned { pid }, _)) => Ok((pid, ours)),
            Some((SpawnReply::Failed { step, errno }, _)) => Err(Error::Spawn {
                host: host.to_owned(),
                program: what.to_owned(),
                source: spawn_failure(step, errno, cwd.as_deref()),
            }),
            Some((SpawnReply::Exited { .. }, _)) | None => Err(Error::Stopped {
                host: host.to_owned(),
                reason: "its init went away".into(),
            }),
        }
    }

    /// Opens handles on the host's namespaces (the init is our unreaped child, so its pid
    /// cannot have been reused).
    pub(crate) fn open_namespaces(&self, host: &str) -> Result<NamespaceFds> {
        let fds = NamespaceFds::open(self.pid, self.namespaces)
            .map_err(|e| Error::os(host, "opening the host's namespaces", e))?;
        // The handles count only if they were opened while the init ran (an exited init
        // stays unreaped until we reap it, so its pid is not reused meanwhile).
        if self.exited() {
            return Err(Error::Stopped {
                host: host.to_owned(),
                reason: "its init exited".into(),
            });
        }
        Ok(fds)
    }

    /// Asks the init to signal one of its children.
    pub(crate) fn signal(&self, pid: i32, signal: i32) -> std::io::Result<()> {
        self.control.send(&Request::Signal { pid, signal }, &[])
    }

    /// SIGKILLs the init (the kernel then kills the whole pid namespace) and reaps it.
    fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd we own; no memory is passed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
        let _ = self.wait_exit();
    }

    /// Blocks until the init has exited and been reaped, and describes how it ended.
    fn wait_exit(&self) -> String {
        loop {
            match waitid(Id::PIDFd(self.pidfd.as_fd()), WaitPidFlag::WEXITED) {
                Err(nix::Error::EINTR) => continue,
                Ok(status) => return describe_wait(status),
                Err(_) => return "its init exited".into(),
            }
        }
    }

    /// `None` while the init runs; how it ended otherwise (reaping it).
    fn exit_status(&self) -> Option<String> {
        match waitid(
            Id::PIDFd(self.pidfd.as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(status) => Some(describe_wait(status)),
            Err(_) => Some("its init exited".into()),
        }
    }

    /// Whether the init has exited (without reaping it).
    fn exited(&self) -> bool {
        matches!(
            waitid(
                Id::PIDFd(self.pidfd.as_fd()),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            ),
            Ok(status) if status != WaitStatus::StillAlive
        )
    }
}

fn describe_wait(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, 0) => "its main process ended".into(),
        WaitStatus::Exited(_, code) => format!("its init exited with status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("its init was killed by {signal}"),
        other => format!("{other:?}"),
    }
}

/// Describes a raw wait status.
pub(crate) fn describe_status(status: i32) -> String {
    use std::os::unix::process::ExitStatusExt;
    std::process::ExitStatus::from_raw(status).to_string()
}

/// The text of a host's /etc/hosts: localhost, its own name on 127.0.1.1 until a network
/// gives it an address, then each network's lines (where a name appears twice, resolvers
/// take the first).
pub(crate) fn render_hosts_file(own_name: &str, blocks: &[&str]) -> String {
    let mut text =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if blocks.is_empty() {
        text.push_str(&format!("127.0.1.1\t{own_name}\n"));
    }
    for block in blocks {
        text.push_str(block);
    }
    text
}

/// Whether a socket in the network namespace of process `pid` listens on TCP `port`.
fn is_listening(pid: i32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| {
            let mut text = String::new();
            crate::ns::open_proc(&format!("{pid}/net/{table}"), false)
                .and_then(|mut file| std::io::Read::read_to_string(&mut file, &mut text))
                .ok()?;
            Some(text)
        })
        .any(|table| {
            table.lines().skip(1).any(|line| {
                let mut fields = line.split_whitespace();
                let local = fields.nth(1).unwrap_or("");
                let state = fields.nth(1).unwrap_or("");
                state == LISTEN
                    && local
                        .rsplit_once(':')
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
}

fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 64 bytes"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else if name.contains('/') {
        "it contains '/'"
    } else {
        return Ok(());
    };
    Err(Error::InvalidHostName {
        name: name.to_owned(),
        reason,
    })
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
