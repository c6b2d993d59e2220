//! Runs one registered test in a fresh process and reports its outcome.

use std::future::Future;
use std::time::Duration;

/// Runs the test registered as `name` in a fresh process; panics with the outcome when it
/// fails. Called by the `#[test]` function that `#[dojjail::test]` generates.
#[doc(hidden)]
pub fn run_test(name: &'static str, timeout: Duration) {
    let _ = (name, timeout);
    todo!("the runner comes next")
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
