//! Running closures inside a host: a pool of threads that entered the host's namespaces
//! once and then run one closure at a time. A round trip costs two channel handoffs, not
//! a thread start and three `setns` calls.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::host::lock;
use crate::ns::{enter_on_this_thread, NamespaceFds};
use crate::spin;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Idle workers of one host.
#[derive(Default)]
pub(crate) struct WorkerPool {
    idle: Mutex<Vec<Worker>>,
    /// Bumped when the host stops: workers of an earlier generation are not reused.
    generation: AtomicU64,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    generation: u64,
    /// Why the worker could not enter the host's namespaces, if it could not.
    failure: Arc<OnceLock<nix::Error>>,
}

impl WorkerPool {
    /// Runs `f` on a worker inside `namespaces`, blocking until it returns or panics.
    pub(crate) fn run<F, T>(
        &self,
        host: &str,
        namespaces: impl FnOnce() -> Result<NamespaceFds>,
        f: F,
    ) -> Result<thread::Result<T>>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let worker = match lock(&self.idle).pop() {
            Some(worker) => worker,
            None => Worker::start(host, namespaces()?, self.generation())?,
        };
        let (done, outcome) = mpsc::sync_channel::<thread::Result<T>>(1);
        // `f` goes first in the tuple, so that a job dropped unrun drops `f` (and whatever
        // it borrows) before `done`, whose drop is what releases the caller below.
        let payload = (f, done);
        let job: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
            let (f, done) = payload;
            let _ = done.send(catch_unwind(AssertUnwindSafe(f)));
        });
        // SAFETY: the job may borrow from our caller, so it must not outlive this call. We
        // block on `outcome` until the job has sent its result or been dropped (which drops
        // `done`, after `f`): either way, nothing of `f` is used after `receive` returns.
        let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
        let sent = worker.jobs.send(job).is_ok();
        match receive(&outcome) {
            Ok(result) if sent => {
                // A worker of a host that stopped meanwhile may not serve its successor's
                // calls (it would keep the old namespaces alive): let it end.
                if worker.generation == self.generation() {
                    lock(&self.idle).push(worker);
                }
                Ok(result)
            }
            _ => Err(match worker.failure.get() {
                Some(e) => Error::os(host, "setns into the host's namespaces", *e),
                None => Error::protocol(host, "an exec worker thread ended unexpectedly"),
            }),
        }
    }

    /// Starts a worker in the background so the first exec finds one ready; if it cannot
    /// enter the namespaces, the exec that uses it reports why.
    pub(crate) fn prestart(&self, host: &str, namespaces: NamespaceFds) {
        if let Ok(worker) = Worker::spawn(host, namespaces, self.generation(), None) {
            lock(&self.idle).push(worker);
        }
    }

    /// Lets every idle worker exit, and busy ones once they finish (the host is gone).
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        lock(&self.idle).clear();
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

impl Worker {
    /// A worker that has entered the namespaces.
    fn start(host: &str, namespaces: NamespaceFds, generation: u64) -> Result<Worker> {
        let (ready, entered) = mpsc::sync_channel(1);
        let worker = Worker::spawn(host, namespaces, generation, Some(ready))?;
        match entered.recv() {
            Ok(Ok(())) => Ok(worker),
            Ok(Err(e)) => Err(Error::os(host, "setns into the host's namespaces", e)),
            Err(_) => Err(Error::protocol(
                host,
                "an exec worker thread ended unexpectedly",
            )),
        }
    }

    /// A worker thread that enters the namespaces, then runs jobs. Jobs sent before it has
    /// entered wait; if it cannot enter, they are dropped unrun and `failure` says why.
    fn spawn(
        host: &str,
        namespaces: NamespaceFds,
        generation: u64,
        ready: Option<mpsc::SyncSender<nix::Result<()>>>,
    ) -> Result<Worker> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let failure = Arc::new(OnceLock::new());
        let failed = failure.clone();
        thread::Builder::new()
            .name(format!("dojjail:{host}"))
            .spawn(move || {
                let result = enter_on_this_thread(&namespaces);
                drop(namespaces);
                if let Err(e) = result {
                    let _ = failed.set(e);
                }
                if let Some(ready) = ready {
                    let _ = ready.send(result);
                }
                if result.is_ok() {
                    while let Ok(job) = receive(&queue) {
                        job();
                    }
                }
            })
            .map_err(|e| Error::os(host, "starting an exec thread", e))?;
        Ok(Worker {
            jobs,
            generation,
            failure,
        })
    }
}

/// How long a waiting side spins before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// Receives from `channel`, spinning for a few microseconds before sleeping: a whole exec
/// round trip takes less than one wake-up from another CPU.
fn receive<T>(channel: &mpsc::Receiver<T>) -> std::result::Result<T, mpsc::RecvError> {
    let spun = spin::spin_for(SPIN, || match channel.try_recv() {
        Ok(value) => Some(Ok(value)),
        Err(mpsc::TryRecvError::Disconnected) => Some(Err(mpsc::RecvError)),
        Err(mpsc::TryRecvError::Empty) => None,
    });
    spun.unwrap_or_else(|| channel.recv())
}
