//! Compile-time behaviour of `#[dojjail::test]`: every error the macro can give, with its
//! message and span (`tests/ui/*.stderr`), and the signatures it accepts
//! (`tests/ui/pass_signatures.rs`). Regenerate the expected output with
//! `TRYBUILD=overwrite cargo test --test ui`, then read every changed `.stderr`.

use std::path::Path;

const PASS: &str = "tests/ui/pass_signatures.rs";

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass(PASS);
    // Every other `tests/ui/*.rs` must fail to compile, as its `.stderr` says.
    let mut paths: Vec<_> = std::fs::read_dir("tests/ui")
        .expect("the tests/ui directory")
        .map(|entry| entry.expect("an entry of tests/ui").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
        .filter(|path| path != Path::new(PASS))
        .collect();
    paths.sort();
    for path in paths {
        cases.compile_fail(path);
    }
}
