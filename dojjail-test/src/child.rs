//! The test process: a re-execution of the test binary that builds the topology, runs the
//! body and reports. It is the topology's controller, so when it dies, for whatever reason,
//! every host, namespace and interface of the test dies with it.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dojjail_core::__private::{become_namespace_root, capture_output, panic_message, RoleHandler};
use dojjail_core::Network;

use crate::registration::TestRegistration;
use crate::report::{Outcome, Report};

/// `DOJJAIL_ROLE` of a test process.
pub(crate) const ROLE_TEST: &str = "test";
/// The registered name of the test to run.
pub(crate) const TEST_ENV: &str = "DOJJAIL_TEST";
/// Where the report goes.
pub(crate) const REPORT_FD: i32 = 3;
/// How much of each host's output a failure shows.
const OUTPUT_TAIL: usize = 4096;

inventory::submit! {
    RoleHandler { role: ROLE_TEST, run: run_test_process }
}

fn run_test_process() -> ! {
    let name = std::env::var(TEST_ENV).unwrap_or_default();
    // SAFETY: we run from dojjail's constructor, before main, single-threaded.
    unsafe { std::env::remove_var(TEST_ENV) };
    become_namespace_root();
    capture_output(true);
    // SAFETY: the runner placed the report memfd at this descriptor for us.
    let mut report = unsafe { File::from_raw_fd(REPORT_FD) };
    // Processes the test starts must not inherit it.
    let _ = nix::fcntl::fcntl(
        &report,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let mut send = |line: &Report| {
        let mut bytes = serde_json::to_vec(line).expect("reports serialize");
        bytes.push(b'\n');
        let _ = report.write_all(&bytes);
    };
    let Some(test) = inventory::iter::<TestRegistration>
        .into_iter()
        .find(|test| test.name == name)
    else {
        send(&Report::Finished {
            outcome: Outcome::TopologyFailed(format!("no test named {name:?} in this binary")),
            hosts_output: Vec::new(),
            topology: String::new(),
        });
        std::process::exit(1);
    };
    let network = match build(test) {
        Ok(network) => network,
        Err(message) => {
            send(&Report::Finished {
                outcome: Outcome::TopologyFailed(message),
                hosts_output: Vec::new(),
                topology: String::new(),
            });
            std::process::exit(1);
        }
    };
    send(&Report::Started {
        hosts: network
            .hosts()
            .iter()
            .map(|host| (host.name().to_owned(), host.pid().unwrap_or(0)))
            .collect(),
        topology: network.describe(),
    });
    let outcome = match catch_unwind(AssertUnwindSafe(|| (test.body)(&network))) {
        Ok(Ok(())) => Outcome::Passed,
        Ok(Err(message)) => Outcome::Failed(message),
        Err(panic) => Outcome::Failed(panic_message(&*panic)),
    };
    let hosts_output = network
        .hosts()
        .iter()
        .map(|host| {
            let output = host.recent_output(OUTPUT_TAIL).unwrap_or_default();
            (host.name().to_owned(), output)
        })
        .collect();
    send(&Report::Finished {
        outcome,
        hosts_output,
        topology: network.describe(),
    });
    let _ = std::io::stdout().flush();
    // Exiting takes the topology down: every host dies with this process.
    std::process::exit(0)
}

/// Calls the topology function and runs the network it returns.
fn build(test: &TestRegistration) -> Result<Network, String> {
    let network = catch_unwind(test.topology)
        .map_err(|panic| format!("the topology function panicked: {}", panic_message(&*panic)))?;
    network
        .run()
        .map_err(|error| format!("the topology did not start: {error}"))?;
    Ok(network)
}
