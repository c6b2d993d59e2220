//! What `#[dojjail::test]` registers for each test, so a re-executed test binary can find
//! the test by name and run it.

use std::fmt::Debug;

/// One `#[dojjail::test]`. Not public API: built by the macro.
#[doc(hidden)]
pub struct TestRegistration {
    /// `module_path!()::function_name`, unique in a binary.
    pub name: &'static str,
    /// Builds the test's topology (the `topology = path` argument).
    pub topology: fn() -> dojjail_core::Network,
    /// Runs the body against the running topology; `Err` is a failure message.
    pub body: fn(&dojjail_core::Network) -> Result<(), String>,
}

inventory::collect!(TestRegistration);

/// What a test body may return: `()` or a `Result` whose error is `Debug`, as for `#[test]`.
#[doc(hidden)]
pub trait IntoTestResult {
    /// `Err` with a message when the value means failure.
    fn into_test_result(self) -> Result<(), String>;
}

impl IntoTestResult for () {
    fn into_test_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Debug> IntoTestResult for Result<(), E> {
    fn into_test_result(self) -> Result<(), String> {
        self.map_err(|error| format!("the test returned an error: {error:?}"))
    }
}
