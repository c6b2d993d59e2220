//! What the test process tells the `#[test]` that started it, as JSON lines in a memfd
//! both can see: first when the topology is up, then how the test ended.

use serde::{Deserialize, Serialize};

/// One line of the report.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The topology runs: its hosts (name and pid of their init) and its description.
    Started {
        hosts: Vec<(String, u32)>,
        topology: String,
    },
    /// The test ended.
    Finished {
        outcome: Outcome,
        /// Recent output of each host's entrypoint and commands.
        hosts_output: Vec<(String, String)>,
        topology: String,
    },
}

/// How a test ended.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Passed,
    /// The body panicked or returned an error: the message.
    Failed(String),
    /// The topology function panicked or the network did not start.
    TopologyFailed(String),
}
