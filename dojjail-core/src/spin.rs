//! Spinning before sleeping. On virtual machines a thread woken from another CPU waits for
//! that CPU to come out of the hypervisor (60–110 µs measured here), more than a whole exec
//! round trip or a host's last setup step. A waiter that expects its answer soon spins for a
//! bounded time first, and then sleeps as usual.

use std::time::{Duration, Instant};

/// Spins on `attempt` for at most `budget`, while it returns `None`. Returns the first
/// answer, or `None` when the budget ran out (or spinning would not help) and the caller
/// should block.
pub(crate) fn spin_for<T>(budget: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    if !may_spin() {
        return None;
    }
    let start = Instant::now();
    loop {
        if let Some(answer) = attempt() {
            return Some(answer);
        }
        if start.elapsed() >= budget {
            return None;
        }
        std::hint::spin_loop();
    }
}

/// Whether the calling thread may run on more than one CPU now (a system call: cheap next
/// to a sleep, and a thread's affinity can change at any time). A thread bound to one CPU
/// must not spin: it would only keep the other side, which needs that CPU, from running.
fn may_spin() -> bool {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).is_ok_and(|set| {
        (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .nth(1)
            .is_some()
    })
}
