//! The per-test runner of dojjail: every `#[dojjail::test]` runs its body in a fresh
//! process with a fresh topology, and the `#[test]` that libtest sees only waits for that
//! process and reports its outcome. Use it through `#[dojjail::test]`.
//!
//! Why a process per test: the process that builds a topology is its controller, and
//! everything of the topology dies with it (parent-death signals, namespaces held only by
//! its descriptors). So a test that panics, hangs past its timeout or is killed with
//! SIGKILL leaves nothing behind, and tests running at once never share a host.

mod child;
mod registration;
mod report;
mod runner;

pub use registration::{IntoTestResult, TestRegistration};
pub use runner::{block_on, run_test};
