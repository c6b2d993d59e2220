//! The per-test runner of dojjail: every `#[dojjail::test]` runs its body in a fresh
//! process with a fresh topology, and the `#[test]` that libtest sees only waits for that
//! process and reports its outcome. Use it through `#[dojjail::test]`.

mod registration;

pub use registration::{IntoTestResult, TestRegistration};

mod runner;

pub use runner::{block_on, run_test};
