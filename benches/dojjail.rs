//! dojjail's benchmark (issue 5): each scenario of `../shared/peer/peer_bench.py` measured
//! on dojjail, on the reference implementation (Python dojjail 0.1.7, when installed) and
//! on the kernel's floor (the same kernel work with no framework); networks of 100 to 1000
//! hosts; the overhead of `#[dojjail::test]`; the memory of hosts.
//!
//!     cargo bench --bench dojjail                   # the full run (a few minutes)
//!     cargo bench --bench dojjail -- --quick        # fewer runs, scale network of 100 only
//!     cargo bench --bench dojjail -- --no-peer      # without the reference
//!     cargo bench --bench dojjail -- --only exec    # sections: floor,peer,start,exec,
//!                                                   #   chain,harness,scale
//!     cargo bench --bench dojjail -- --help         # every option
//!
//! Prints tables to stdout and writes one JSON object per measurement to
//! `target/bench-results.jsonl`. See BENCHMARKS.md for what each number means.

#[path = "dojjail_bench/floor.rs"]
mod floor;
#[path = "dojjail_bench/netlink.rs"]
mod netlink;
#[path = "dojjail_bench/stats.rs"]
mod stats;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use dojjail::{Host, Network};
use serde_json::{json, Value};

use stats::{median, ms, show_kib, show_ms, Latency};

const CHAIN_SIZES: [usize; 4] = [2, 10, 50, 98];
const PORT: u16 = 7000;
const REFERENCE_PYTHON: &str = "/opt/dojjail-py/bin/python";

// ---------------------------------------------------------------------------------------
// `#[dojjail::test]` overhead: a test with a two-host topology and an empty body.

fn two_hosts() -> Network {
    let network = Network::new("pair");
    network
        .connect(&Host::new("a"), &Host::new("b"))
        .expect("two fresh hosts connect");
    network
}

#[dojjail::test(topology = two_hosts)]
fn two_host_test(_net: &dojjail::Network) {}

/// What a plain `#[test]` costs besides its body: libtest runs it on a thread of its own.
#[inline(never)]
fn plain_test() {
    std::hint::black_box(());
}

// ---------------------------------------------------------------------------------------

struct Options {
    quick: bool,
    peer: bool,
    scale: Vec<usize>,
    /// Sections to run; all when `None`.
    only: Option<Vec<String>>,
    /// Runs of the millisecond scenarios, instead of 5 (3 with --quick).
    runs: Option<usize>,
}

const SECTIONS: [&str; 7] = [
    "floor", "peer", "start", "exec", "chain", "harness", "scale",
];

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            quick: false,
            peer: true,
            scale: vec![100, 500, 1000],
            only: None,
            runs: None,
        };
        let mut scale_given = false;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--no-peer" => options.peer = false,
                "--no-scale" => {
                    options.scale.clear();
                    scale_given = true;
                }
                "--scale" => {
                    let list = args.next().unwrap_or_default();
                    options.scale = list.split(',').filter_map(|s| s.parse().ok()).collect();
                    scale_given = true;
                }
                "--only" => {
                    let list = args.next().unwrap_or_default();
                    let only: Vec<String> = list.split(',').map(str::to_owned).collect();
                    if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                        eprintln!("unknown section {bad:?}; sections: {}", SECTIONS.join(","));
                        std::process::exit(2);
                    }
                    options.only = Some(only);
                }
                "--runs" => options.runs = args.next().and_then(|n| n.parse().ok()),
                // `cargo bench` passes --bench.
                "--bench" => {}
                "--help" | "-h" => {
                    println!(
                        "cargo bench --bench dojjail -- [options]\n  \
                         --quick          fewer runs, scale 100 only\n  \
                         --no-peer        skip the reference (Python dojjail)\n  \
                         --scale 100,500  sizes of the scale networks (default 100,500,1000)\n  \
                         --no-scale       no scale networks\n  \
                         --only a,b       only these sections: {}\n  \
                         --runs N         runs of the millisecond scenarios (default 5)",
                        SECTIONS.join(",")
                    );
                    std::process::exit(0);
                }
                other => eprintln!("ignoring unknown argument {other:?}"),
            }
        }
        if options.quick && !scale_given {
            options.scale = vec![100];
        }
        options
    }

    fn wants(&self, section: &str) -> bool {
        let chosen = self
            .only
            .as_ref()
            .is_none_or(|only| only.iter().any(|s| s == section));
        chosen && (section != "peer" || self.peer) && (section != "scale" || !self.scale.is_empty())
    }

    /// Runs of the scenarios that take milliseconds.
    fn small_runs(&self) -> usize {
        self.runs.unwrap_or(if self.quick { 3 } else { 5 })
    }

    /// Runs of each chain network: five, because this shared VM has slow spells of many
    /// seconds in which a chain of 98 takes twice as long, and a median of three can land
    /// in one.
    fn network_runs(&self) -> usize {
        if self.quick {
            1
        } else {
            5
        }
    }

    /// Closures and shell commands per run.
    fn counts(&self) -> (usize, usize) {
        if self.quick {
            (500, 30)
        } else {
            (2000, 100)
        }
    }
}

/// Every measurement, for the JSON lines file.
#[derive(Default)]
struct Results {
    lines: Vec<Value>,
}

impl Results {
    fn add(&mut self, value: Value) {
        self.lines.push(value);
    }

    fn write(&self, header: Value) -> std::io::Result<PathBuf> {
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("bench-results.jsonl");
        let mut file = std::fs::File::create(&path)?;
        for line in std::iter::once(&header).chain(&self.lines) {
            writeln!(file, "{line}")?;
        }
        Ok(path)
    }
}

fn progress(text: &str) {
    eprintln!("[bench] {text}");
}

/// Everything one run measured; `None` or empty where a section did not run.
struct Measured {
    clone_floor: Option<f64>,
    network_floors: BTreeMap<usize, floor::NetworkFloor>,
    veth_floors: BTreeMap<usize, f64>,
    /// Floors measured beside a network, not yet summarized.
    pending_floors: BTreeMap<usize, NetworkFloors>,
    reference: Reference,
    host_start: Option<f64>,
    idle: Option<Memory>,
    /// dojjail's exec round trip and its floor.
    exec: Option<(Latency, Latency)>,
    /// The same with the caller and the worker bound to one CPU, then to two.
    exec_placed: Vec<(&'static str, Latency, Latency)>,
    /// dojjail's exec_shell("true") and its floor.
    shell: Option<(Latency, Latency)>,
    chains: BTreeMap<usize, Chain>,
    harness: Option<Harness>,
    scale: Vec<Scale>,
}

struct Chain {
    up: f64,
    down: f64,
    reach: Reach,
    /// Every run's time up, in ms.
    ups: Vec<f64>,
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(HELPER) {
        floor_helper();
    }
    let options = Options::parse();
    let mut results = Results::default();
    NETNS_BASELINE.get_or_init(net_namespaces);

    let mut measured = Measured {
        clone_floor: None,
        network_floors: BTreeMap::new(),
        veth_floors: BTreeMap::new(),
        pending_floors: BTreeMap::new(),
        reference: Reference::Missing("skipped (--no-peer)".into()),
        host_start: None,
        idle: None,
        exec: None,
        exec_placed: Vec::new(),
        shell: None,
        chains: BTreeMap::new(),
        harness: None,
        scale: Vec::new(),
    };

    if options.wants("floor") {
        measure_clone_floor(&options, &mut measured, &mut results);
    }
    if options.wants("peer") {
        measured.reference = run_reference(if options.quick { 1 } else { 3 }, &mut results);
    } else if options.peer {
        measured.reference = Reference::Missing("skipped (--only)".into());
    }
    if options.wants("start") {
        measure_start(&options, &mut measured, &mut results);
    }
    if options.wants("exec") {
        measure_exec(&options, &mut measured, &mut results);
    }
    if options.wants("chain") {
        for n in CHAIN_SIZES {
            progress(&format!("dojjail and floor: chain of {n}"));
            let mut floors = NetworkFloors::default();
            let chain = measure_chain(
                n,
                options.network_runs(),
                options.wants("floor").then_some(&mut floors),
            );
            measured.pending_floors.insert(n, floors);
            results.add(
                json!({"system": "dojjail", "scenario": "chain_network_up", "n": n,
                "ms": chain.up, "down_ms": chain.down, "runs_ms": chain.ups,
                "neighbour_reachable": chain.reach.neighbour,
                "non_neighbour_blocked": chain.reach.blocked}),
            );
            measured.chains.insert(n, chain);
            record_floors(n, &mut measured, &mut results);
        }
    }
    if options.wants("harness") {
        progress("dojjail: #[dojjail::test] overhead");
        let harness = measure_harness(if options.quick { 5 } else { 20 }, 100);
        results.add(json!({"system": "dojjail", "scenario": "dojjail_test_two_hosts", "n": 1,
            "ms": harness.test, "plain_ms": harness.plain, "overhead_ms": harness.test - harness.plain,
            "runs": harness.runs, "name": harness.name}));
        results.add(
            json!({"system": "dojjail", "scenario": "dojjail_tests_on_2_threads", "n": harness.batch,
            "ms": harness.batch_ms, "per_test_ms": harness.batch_ms / harness.batch as f64}),
        );
        measured.harness = Some(harness);
    }
    if options.wants("scale") {
        for &n in &options.scale {
            progress(&format!("dojjail and floor: network of {n}"));
            let mut floors = NetworkFloors::default();
            let s = measure_scale(n, options.wants("floor").then_some(&mut floors));
            measured.pending_floors.insert(n, floors);
            results.add(
                json!({"system": "dojjail", "scenario": "scale_chain", "n": n,
                "ms": s.up, "down_ms": s.down,
                "pss_kib": s.pss_kib, "inits_pss_kib": s.inits_pss_kib,
                "controller_growth_kib": s.controller_kib,
                "mem_available_drop_kib": s.available_drop_kib,
                "neighbour_reachable": s.reach.neighbour,
                "non_neighbour_blocked": s.reach.blocked, "error": s.error}),
            );
            measured.scale.push(s);
            record_floors(n, &mut measured, &mut results);
        }
    }

    let machine = machine();
    let report = report(&options, &machine, &measured, &mut results);
    print!("{report}");
    let header = json!({"system": "meta", "quick": options.quick, "nproc": machine.nproc,
    "kernel": machine.kernel, "cpu": machine.cpu,
    "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    "reference": match &measured.reference {
        Reference::Measured(_) => "measured".to_owned(),
        Reference::Missing(why) => why.clone(),
    }});
    match results.write(header) {
        Ok(path) => println!("\nJSON lines: {}", path.display()),
        Err(error) => eprintln!("cannot write the JSON lines: {error}"),
    }
}

/// The argument that makes this binary a floor helper (see [`floor_helper`]).
const HELPER: &str = "--floor-helper";

/// Runs a floor in a fresh, single-threaded copy of this binary (clone3 with CLONE_NEWUSER
/// needs a single-threaded process, and its children are then plain copies of one), so
/// floors can be measured beside dojjail, under the same noise. `args` are `clone RUNS`,
/// `network N` or `veth N`; the helper prints JSON lines.
fn run_helper(args: &[String]) -> Vec<Value> {
    let output = Command::new("/proc/self/exe")
        .arg(HELPER)
        .args(args)
        .output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect(),
        Ok(output) => {
            eprintln!(
                "floor {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            Vec::new()
        }
        Err(error) => {
            eprintln!("floor {args:?}: cannot start the helper: {error}");
            Vec::new()
        }
    }
}

/// The helper's side of [`run_helper`].
fn floor_helper() -> ! {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let number = |i: usize| {
        args.get(i)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1)
    };
    let fail = |error: std::io::Error| -> ! {
        eprintln!("{error}");
        std::process::exit(1)
    };
    if floor::thread_count() != 1 {
        fail(std::io::Error::other(
            "the floor helper is not single-threaded",
        ));
    }
    match args.first().map(String::as_str) {
        Some("clone") => {
            for _ in 0..number(1) {
                let one = floor::clone_exit().unwrap_or_else(|e| fail(e));
                println!("{}", json!({"ms": ms(one)}));
            }
        }
        Some("network") => {
            let f = floor::network(number(1)).unwrap_or_else(|e| fail(e));
            println!(
                "{}",
                json!({"ms": ms(f.up), "clone_ms": ms(f.clone), "links_ms": ms(f.links),
                    "addresses_ms": ms(f.addresses), "down_ms": ms(f.down)})
            );
        }
        Some("veth") => {
            let one = floor::veth_batch(number(1)).unwrap_or_else(|e| fail(e));
            println!("{}", json!({"ms": ms(one)}));
        }
        other => fail(std::io::Error::other(format!("unknown floor {other:?}"))),
    }
    std::process::exit(0)
}

fn measure_clone_floor(options: &Options, measured: &mut Measured, results: &mut Results) {
    progress("floor: clone3 with 7 namespace flags");
    let runs = if options.quick { 10 } else { 30 };
    let samples: Vec<f64> = run_helper(&["clone".into(), runs.to_string()])
        .iter()
        .filter_map(|line| line["ms"].as_f64())
        .collect();
    if samples.is_empty() {
        return;
    }
    let clone_floor = median(&samples);
    results.add(
        json!({"system": "floor", "scenario": "host_start_first_exec", "n": 1,
        "ms": clone_floor, "what": "clone3(7 namespace flags) + _exit + waitpid",
        "runs": samples.len()}),
    );
    measured.clone_floor = Some(clone_floor);
}

/// The floors of a network of n hosts, one run each time dojjail's network runs once.
#[derive(Default)]
struct NetworkFloors {
    network: Vec<floor::NetworkFloor>,
    veth: Vec<f64>,
}

impl NetworkFloors {
    fn measure(&mut self, n: usize) {
        if let Some(line) = run_helper(&["network".into(), n.to_string()]).first() {
            let d = |key: &str| Duration::from_secs_f64(line[key].as_f64().unwrap_or(0.0) / 1000.0);
            self.network.push(floor::NetworkFloor {
                clone: d("clone_ms"),
                links: d("links_ms"),
                addresses: d("addresses_ms"),
                up: d("ms"),
                down: d("down_ms"),
            });
        }
        settle_namespaces(Duration::from_secs(30));
        if let Some(line) = run_helper(&["veth".into(), n.to_string()]).first() {
            self.veth.extend(line["ms"].as_f64());
        }
        settle_namespaces(Duration::from_secs(30));
    }
}

/// Summarizes the floors measured beside dojjail's networks of `n` hosts.
fn record_floors(n: usize, measured: &mut Measured, results: &mut Results) {
    let Some(floors) = measured.pending_floors.remove(&n) else {
        return;
    };
    if !floors.network.is_empty() {
        let all = &floors.network;
        let pick = |f: fn(&floor::NetworkFloor) -> Duration| {
            Duration::from_secs_f64(median(
                &all.iter().map(|m| f(m).as_secs_f64()).collect::<Vec<_>>(),
            ))
        };
        let floor = floor::NetworkFloor {
            clone: pick(|m| m.clone),
            links: pick(|m| m.links),
            addresses: pick(|m| m.addresses),
            up: pick(|m| m.up),
            down: pick(|m| m.down),
        };
        results.add(json!({"system": "floor", "scenario": "network_up", "n": n,
            "ms": ms(floor.up), "clone_ms": ms(floor.clone), "veth_batch_ms": ms(floor.links),
            "addresses_ms": ms(floor.addresses), "down_ms": ms(floor.down), "runs": all.len(),
            "what": "n x clone3(7 ns) + bridge and n veth pairs into them (one batch) + n x (up + address)"}));
        measured.network_floors.insert(n, floor);
    }
    if !floors.veth.is_empty() {
        let value = median(&floors.veth);
        results.add(
            json!({"system": "floor", "scenario": "veth_batch", "n": n, "ms": value,
            "what": "fresh netns, bridge + n veth pairs on it (both ends there), one batch",
            "runs": floors.veth.len()}),
        );
        measured.veth_floors.insert(n, value);
    }
}

fn measure_start(options: &Options, measured: &mut Measured, results: &mut Results) {
    progress("dojjail: host start + first exec");
    let mut starts = Vec::new();
    let mut first_execs = Vec::new();
    let mut idle = None;
    for i in 0..options.small_runs() {
        let start = Instant::now();
        let host = Host::new("bench-host");
        host.run().expect("the host starts");
        let running = Instant::now();
        assert_eq!(host.exec(|| 1 + 1).expect("exec"), 2);
        starts.push(ms(start.elapsed()));
        first_execs.push(ms(running.elapsed()));
        if i == 0 {
            idle = Some(host);
        }
    }
    let host_start = median(&starts);
    results.add(
        json!({"system": "dojjail", "scenario": "host_start_first_exec", "n": 1,
        "ms": host_start, "runs_ms": starts, "first_exec_ms": first_execs}),
    );
    measured.host_start = Some(host_start);
    if let Some(host) = idle {
        std::thread::sleep(Duration::from_millis(200));
        let memory = pss_of_tree(host.pid().expect("running") as i32);
        results.add(
            json!({"system": "dojjail", "scenario": "idle_host_memory", "n": 1,
            "pss_kib": memory.pss, "private_kib": memory.private, "processes": memory.processes}),
        );
        measured.idle = Some(memory);
    }
}

/// Each run of dojjail is paired with a run of its floor, so both see the same noise.
fn measure_exec(options: &Options, measured: &mut Measured, results: &mut Results) {
    let runs = options.small_runs();
    let (exec_count, shell_count) = options.counts();
    let host = Host::new("bench-exec");
    host.run().expect("the host starts");
    progress("dojjail and floor: exec round trips");
    let handoff = floor::Handoff::new();
    let mut exec_runs = Vec::new();
    let mut handoff_runs = Vec::new();
    for _ in 0..runs {
        let samples: Vec<Duration> = (0..exec_count)
            .map(|_| {
                let start = Instant::now();
                std::hint::black_box(host.exec(|| 1).expect("exec"));
                start.elapsed()
            })
            .collect();
        exec_runs.push(Latency::of(&samples));
        let samples: Vec<Duration> = (0..exec_count).map(|_| handoff.round_trip()).collect();
        handoff_runs.push(Latency::of(&samples));
    }
    let exec = (
        Latency::median_of(&exec_runs),
        Latency::median_of(&handoff_runs),
    );
    progress("dojjail and floor: exec_shell(\"true\")");
    let mut shell_runs = Vec::new();
    let mut sh_runs = Vec::new();
    for _ in 0..runs {
        let samples: Vec<Duration> = (0..shell_count)
            .map(|_| {
                let start = Instant::now();
                let output = host.exec_shell("true").expect("exec_shell");
                assert!(output.status.success());
                start.elapsed()
            })
            .collect();
        shell_runs.push(Latency::of(&samples));
        let samples: Vec<Duration> = (0..shell_count).map(|_| floor::sh_true()).collect();
        sh_runs.push(Latency::of(&samples));
    }
    let shell = (
        Latency::median_of(&shell_runs),
        Latency::median_of(&sh_runs),
    );
    for (system, scenario, latency, count, what) in [
        (
            "dojjail",
            "exec_roundtrip",
            exec.0,
            exec_count,
            "host.exec(|| 1)",
        ),
        (
            "floor",
            "exec_roundtrip",
            exec.1,
            exec_count,
            "closure to a worker thread over a channel and back",
        ),
        (
            "dojjail",
            "exec_shell_true",
            shell.0,
            shell_count,
            "host.exec_shell(\"true\")",
        ),
        (
            "floor",
            "exec_shell_true",
            shell.1,
            shell_count,
            "std::process::Command /bin/sh -c true, output()",
        ),
    ] {
        results.add(
            json!({"system": system, "scenario": scenario, "n": 1, "ms": latency.mean,
            "p50_ms": latency.p50, "p99_ms": latency.p99, "count": count, "runs": runs,
            "what": what}),
        );
    }
    measured.exec = Some(exec);

    // Where the two threads run decides the round trip: see BENCHMARKS.md.
    if floor::online_cpus() >= 2 {
        for (placement, worker_cpu) in [("one CPU", 0), ("two CPUs", 1)] {
            floor::pin(Some(0));
            host.exec(|| floor::pin(Some(worker_cpu))).expect("exec");
            handoff.call(move || floor::pin(Some(worker_cpu)));
            let ours: Vec<Duration> = (0..exec_count)
                .map(|_| {
                    let start = Instant::now();
                    std::hint::black_box(host.exec(|| 1).expect("exec"));
                    start.elapsed()
                })
                .collect();
            let theirs: Vec<Duration> = (0..exec_count).map(|_| handoff.round_trip()).collect();
            let (ours, theirs) = (Latency::of(&ours), Latency::of(&theirs));
            for (system, latency) in [("dojjail", ours), ("floor", theirs)] {
                results.add(
                    json!({"system": system, "scenario": "exec_roundtrip_pinned",
                    "placement": placement, "n": 1, "ms": latency.mean, "p50_ms": latency.p50,
                    "p99_ms": latency.p99, "count": exec_count}),
                );
            }
            measured.exec_placed.push((placement, ours, theirs));
        }
        floor::pin(None);
        host.exec(|| floor::pin(None)).expect("exec");
        handoff.call(|| floor::pin(None));
    }
    measured.shell = Some(shell);
}

/// `runs` chains of `n` hosts, each run paired with a run of the floors (when asked).
fn measure_chain(n: usize, runs: usize, mut floors: Option<&mut NetworkFloors>) -> Chain {
    let mut ups = Vec::new();
    let mut downs = Vec::new();
    let mut reach = Reach::default();
    settle_namespaces(Duration::from_secs(30));
    for run in 0..runs {
        if let Some(floors) = floors.as_deref_mut() {
            floors.measure(n);
        }
        let (up, network, hosts) = chain_up(n);
        if run == 0 {
            reach = verify(&network, &hosts);
        }
        let down = tear_down(network, hosts);
        ups.push(ms(up));
        downs.push(ms(down));
        settle_namespaces(Duration::from_secs(30));
    }
    Chain {
        up: median(&ups),
        down: median(&downs),
        reach,
        ups,
    }
}

/// The tables, and the targets of issue 5 (also added to `results`).
fn report(options: &Options, machine: &Machine, m: &Measured, results: &mut Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ndojjail benchmark ({}) on {} cores, {}, kernel {}\n",
        if options.quick { "quick" } else { "full" },
        machine.nproc,
        machine.cpu,
        machine.kernel
    );
    let _ = writeln!(
        out,
        "| scenario | n | dojjail | reference | ratio (ref/dojjail) | floor | dojjail/floor |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut row = |scenario: &str, n: usize, ours: f64, theirs: Option<f64>, floor: Option<f64>| {
        let (reference_text, ratio) = match (&m.reference, theirs) {
            (Reference::Measured(_), Some(t)) => (show_ms(t), format!("{:.1}x", t / ours)),
            (Reference::Measured(_), None) => ("-".to_owned(), "-".to_owned()),
            (Reference::Missing(why), _) => (why.clone(), "-".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {scenario} | {n} | {} | {reference_text} | {ratio} | {} | {} |",
            show_ms(ours),
            floor.map_or("-".into(), show_ms),
            floor.map_or("-".into(), |f| format!("{:.1}x", ours / f)),
        );
    };
    let theirs = |scenario: &str, n: usize| m.reference.get(scenario, n);
    if let Some(start) = m.host_start {
        let scenario = "host_start_first_exec";
        row(scenario, 1, start, theirs(scenario, 1), m.clone_floor);
    }
    for (name, values) in [("exec_roundtrip", m.exec), ("exec_shell_true", m.shell)] {
        if let Some((ours, floor)) = values {
            let label = format!("{name} (mean)");
            row(&label, 1, ours.mean, theirs(name, 1), Some(floor.mean));
            row(&format!("{name} p50"), 1, ours.p50, None, Some(floor.p50));
            row(&format!("{name} p99"), 1, ours.p99, None, Some(floor.p99));
            if name == "exec_roundtrip" {
                for (placement, ours, floor) in &m.exec_placed {
                    let label = format!("{name} p50, threads bound to {placement}");
                    row(&label, 1, ours.p50, None, Some(floor.p50));
                }
            }
        }
    }
    for (&n, chain) in &m.chains {
        let floor = m.network_floors.get(&n).map(|f| ms(f.up));
        let scenario = "chain_network_up";
        row(scenario, n, chain.up, theirs(scenario, n), floor);
    }

    if !m.chains.is_empty() {
        let _ = writeln!(out, "\nchains: reachability (from host 0) and teardown\n");
        let _ = writeln!(
            out,
            "| n | dojjail: neighbour reachable | dojjail: non-neighbour blocked | reference: neighbour reachable | reference: non-neighbour blocked | dojjail teardown |"
        );
        let _ = writeln!(out, "| ---: | --- | --- | --- | --- | ---: |");
        for (&n, chain) in &m.chains {
            let (their_neighbour, their_blocked) = m.reference.reach(n);
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {their_neighbour} | {their_blocked} | {} |",
                yes_no(Some(chain.reach.neighbour)),
                yes_no(chain.reach.blocked),
                show_ms(chain.down)
            );
        }
    }

    if !m.network_floors.is_empty() || !m.veth_floors.is_empty() {
        let _ = writeln!(out, "\nnetwork floor phases (no framework; medians)\n");
        let _ = writeln!(
            out,
            "| n | clone3 x n (7 ns) | bridge + n veth, peers into the n netns, one batch | n x (up + address) | up total | tear down | bridge + n veth, both ends in one netns |"
        );
        let _ = writeln!(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        let sizes: std::collections::BTreeSet<usize> = m
            .network_floors
            .keys()
            .chain(m.veth_floors.keys())
            .copied()
            .collect();
        for n in sizes {
            let f = m.network_floors.get(&n);
            let show = |pick: fn(&floor::NetworkFloor) -> Duration| {
                f.map_or("-".into(), |f| show_ms(ms(pick(f))))
            };
            let _ = writeln!(
                out,
                "| {n} | {} | {} | {} | {} | {} | {} |",
                show(|f| f.clone),
                show(|f| f.links),
                show(|f| f.addresses),
                show(|f| f.up),
                show(|f| f.down),
                m.veth_floors.get(&n).map_or("-".into(), |v| show_ms(*v))
            );
        }
    }

    if !m.scale.is_empty() {
        let _ = writeln!(out, "\nscale: chains of n hosts, one run each\n");
        let _ = writeln!(
            out,
            "| n | up | floor up | tear down (processes gone) | floor tear down | reachability | PSS total | inits | controller growth | MemAvailable drop |"
        );
        let _ = writeln!(
            out,
            "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
        );
        for s in &m.scale {
            let floor = m.network_floors.get(&s.n);
            if let Some(error) = &s.error {
                let _ = writeln!(out, "| {} | failed: {error} |", s.n);
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
                s.n,
                show_ms(s.up),
                floor.map_or("-".into(), |f| show_ms(ms(f.up))),
                show_ms(s.down),
                floor.map_or("-".into(), |f| show_ms(ms(f.down))),
                yes_no(Some(s.reach.neighbour)),
                yes_no(s.reach.blocked),
                show_kib(s.pss_kib),
                show_kib(s.inits_pss_kib),
                show_kib(s.controller_kib),
                show_kib(s.available_drop_kib),
            );
        }
    }

    if let Some(h) = &m.harness {
        let _ = writeln!(out, "\n#[dojjail::test]\n");
        let _ = writeln!(out, "| what | time |");
        let _ = writeln!(out, "| --- | ---: |");
        let _ = writeln!(
            out,
            "| run_test({:?}): two hosts, empty body (median of {}) | {} |",
            h.name,
            h.runs,
            show_ms(h.test)
        );
        let _ = writeln!(
            out,
            "| a plain fn on a thread of its own, as libtest runs a #[test] | {} |",
            show_ms(h.plain)
        );
        let _ = writeln!(out, "| overhead | {} |", show_ms(h.test - h.plain));
        let _ = writeln!(
            out,
            "| {} such tests on 2 threads, total | {} |",
            h.batch,
            show_ms(h.batch_ms)
        );
    }

    if let Some(idle) = &m.idle {
        let _ = writeln!(
            out,
            "\nmemory of one idle host (its init and descendants)\n"
        );
        let _ = writeln!(
            out,
            "| processes | PSS | private (clean + dirty) |\n| ---: | ---: | ---: |\n| {} | {} | {} |",
            idle.processes,
            show_kib(idle.pss),
            show_kib(idle.private)
        );
    }

    // The targets of issue 5: (what, goal, measured in the goal's unit, limit, shown).
    let thousand = m.scale.iter().find(|s| s.n == 1000 && s.error.is_none());
    let latency = |l: &Latency| {
        format!(
            "{} (p50 {}, p99 {})",
            show_ms(l.mean),
            show_ms(l.p50),
            show_ms(l.p99)
        )
    };
    let targets: Vec<(&str, &str, Option<f64>, f64, String)> = vec![
        (
            "host start + first exec",
            "<= 2 ms",
            m.host_start,
            2.0,
            m.host_start.map_or("not run".into(), show_ms),
        ),
        (
            "exec round trip (closure), mean",
            "<= 0.05 ms",
            m.exec.map(|e| e.0.mean),
            0.05,
            m.exec.map_or("not run".into(), |e| latency(&e.0)),
        ),
        (
            "exec_shell(\"true\"), mean",
            "<= 1.5 ms",
            m.shell.map(|e| e.0.mean),
            1.5,
            m.shell.map_or("not run".into(), |e| latency(&e.0)),
        ),
        (
            "chain of 98 hosts up",
            "<= 0.25 s",
            m.chains.get(&98).map(|c| c.up),
            250.0,
            m.chains
                .get(&98)
                .map_or("not run".into(), |c| show_ms(c.up)),
        ),
        (
            "1000 hosts up",
            "<= 3 s",
            thousand.map(|s| s.up),
            3000.0,
            thousand.map_or("not run".into(), |s| show_ms(s.up)),
        ),
        (
            "#[dojjail::test] overhead, 2 hosts",
            "<= 25 ms",
            m.harness.as_ref().map(|h| h.test - h.plain),
            25.0,
            m.harness
                .as_ref()
                .map_or("not run".into(), |h| show_ms(h.test - h.plain)),
        ),
        (
            "idle host PSS",
            "<= 1 MiB",
            m.idle.map(|i| i.pss / 1024.0),
            1.0,
            m.idle.map_or("not run".into(), |i| show_kib(i.pss)),
        ),
    ];
    let _ = writeln!(out, "\ntargets of issue 5\n");
    let _ = writeln!(out, "| target | goal | measured | |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (what, goal, value, limit, shown) in &targets {
        let verdict = match value {
            Some(v) if *v <= *limit => "met",
            Some(_) => "MISSED",
            None => "not measured",
        };
        let _ = writeln!(out, "| {what} | {goal} | {shown} | {verdict} |");
        results.add(
            json!({"system": "dojjail", "scenario": "target", "what": what, "goal": goal,
            "value": value, "met": value.map(|v| v <= *limit)}),
        );
    }
    out
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "n/a",
    }
}

// ---------------------------------------------------------------------------------------
// Networks.

#[derive(Clone, Copy, Debug, Default)]
struct Reach {
    neighbour: bool,
    /// `None` when there is no non-neighbour (n = 2).
    blocked: Option<bool>,
}

/// n hosts in a chain (each connected to the next), network running. Timed from
/// `Host::new` to the end of `Network::run`, as the reference is.
fn chain_up(n: usize) -> (Duration, Network, Vec<Host>) {
    let start = Instant::now();
    let hosts: Vec<Host> = (0..n).map(|i| Host::new(format!("host-{i}"))).collect();
    let network = Network::new("router");
    let network = if n > 250 {
        network.subnet("10.0.0.0/16").expect("a valid subnet")
    } else {
        network
    };
    for pair in hosts.windows(2) {
        network.connect(&pair[0], &pair[1]).expect("connect");
    }
    network.run().expect("the network runs");
    (start.elapsed(), network, hosts)
}

/// From host 0: host 1 (a neighbour) must accept a TCP connection, host 2 (not a neighbour)
/// must not.
fn verify(network: &Network, hosts: &[Host]) -> Reach {
    let listen = |host: &Host| {
        host.exec(|| TcpListener::bind(("0.0.0.0", PORT)))
            .expect("exec")
            .expect("bind")
    };
    let reaches = |to: &Host, patience: Duration| {
        let address = network.ip(to).expect("a member");
        hosts[0]
            .exec(|| {
                TcpStream::connect_timeout(&SocketAddr::from((address, PORT)), patience).is_ok()
            })
            .expect("exec")
    };
    let _first = listen(&hosts[1]);
    let neighbour = reaches(&hosts[1], Duration::from_secs(2));
    let blocked = hosts.get(2).map(|far| {
        let _far = listen(far);
        !reaches(far, Duration::from_millis(300))
    });
    Reach { neighbour, blocked }
}

/// Drops the network and every host, and waits until the hosts' processes are gone.
fn tear_down(network: Network, hosts: Vec<Host>) -> Duration {
    let pids: Vec<u32> = hosts.iter().filter_map(Host::pid).collect();
    let start = Instant::now();
    drop(network);
    drop(hosts);
    while pids
        .iter()
        .any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    {
        std::thread::sleep(Duration::from_micros(200));
    }
    start.elapsed()
}

/// Active network namespaces by the slab allocator's count (approximate: per-CPU caches).
fn net_namespaces() -> Option<u64> {
    std::fs::read_to_string("/proc/slabinfo")
        .ok()?
        .lines()
        .find(|line| line.starts_with("net_namespace "))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

static NETNS_BASELINE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

/// Whether a kernel worker is running the network namespace cleanup now: kworkers name
/// the workqueue of their current or last work in their comm (`kworker/u8:1+netns`).
fn netns_cleanup_running() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        let is_netns_worker = std::fs::read_to_string(path.join("comm"))
            .is_ok_and(|comm| comm.starts_with("kworker/") && comm.contains("netns"));
        is_netns_worker
            && std::fs::read_to_string(path.join("stat")).is_ok_and(|stat| {
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.as_bytes()[0]);
                matches!(state, Some(b'R' | b'D'))
            })
    })
}

/// Waits (up to `limit`) until the kernel has cleaned up the network namespaces of earlier
/// measurements: their cleanup runs asynchronously and would burden the next one. Done
/// when the slab count of network namespaces is back near where it was at the start, or
/// when it has stopped falling and no kernel worker runs the cleanup (other programs may
/// hold namespaces, and freed ones may linger in the slab until later RCU work). Returns
/// how long it waited, if it could tell.
fn settle_namespaces(limit: Duration) -> Option<Duration> {
    let baseline = (*NETNS_BASELINE.get_or_init(net_namespaces))?;
    let start = Instant::now();
    let mut lowest = net_namespaces()?;
    let mut lowest_at = Duration::ZERO;
    let mut quiet_polls = 0;
    loop {
        let now = net_namespaces()?;
        if now <= baseline + 16 {
            return Some(start.elapsed());
        }
        if now < lowest {
            (lowest, lowest_at, quiet_polls) = (now, start.elapsed(), 0);
        } else if netns_cleanup_running() {
            quiet_polls = 0;
        } else {
            quiet_polls += 1;
            if quiet_polls >= 10 {
                return Some(lowest_at);
            }
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Scale {
    n: usize,
    up: f64,
    down: f64,
    reach: Reach,
    pss_kib: f64,
    inits_pss_kib: f64,
    controller_kib: f64,
    available_drop_kib: f64,
    error: Option<String>,
}

fn measure_scale(n: usize, floors: Option<&mut NetworkFloors>) -> Scale {
    settle_namespaces(Duration::from_secs(30));
    if let Some(floors) = floors {
        floors.measure(n);
    }
    let controller_before = pss(std::process::id() as i32).map_or(0.0, |m| m.pss);
    let available_before = mem_available_kib();
    let outcome = std::panic::catch_unwind(|| chain_up(n));
    let (up, network, hosts) = match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Scale {
                n,
                up: f64::NAN,
                down: f64::NAN,
                reach: Reach::default(),
                pss_kib: f64::NAN,
                inits_pss_kib: f64::NAN,
                controller_kib: f64::NAN,
                available_drop_kib: f64::NAN,
                error: Some(message),
            };
        }
    };
    let inits: f64 = hosts
        .iter()
        .filter_map(Host::pid)
        .map(|pid| pss_of_tree(pid as i32).pss)
        .sum();
    let controller = pss(std::process::id() as i32).map_or(0.0, |m| m.pss) - controller_before;
    let available_drop = available_before - mem_available_kib();
    let reach = {
        // Host 0 to host 1 (an edge) and to the last host (no edge).
        let ends = [hosts[0].clone(), hosts[1].clone(), hosts[n - 1].clone()];
        verify(&network, &ends)
    };
    let down = tear_down(network, hosts);
    Scale {
        n,
        up: ms(up),
        down: ms(down),
        reach,
        pss_kib: inits + controller,
        inits_pss_kib: inits,
        controller_kib: controller,
        available_drop_kib: available_drop,
        error: None,
    }
}

// ---------------------------------------------------------------------------------------
// #[dojjail::test].

struct Harness {
    name: &'static str,
    runs: usize,
    test: f64,
    plain: f64,
    batch: usize,
    batch_ms: f64,
}

fn measure_harness(runs: usize, batch: usize) -> Harness {
    let name = dojjail::__private::inventory::iter::<dojjail::__private::TestRegistration>
        .into_iter()
        .map(|test| test.name)
        .find(|name| name.ends_with("::two_host_test"))
        .expect("#[dojjail::test] registered two_host_test");
    let timeout = Duration::from_secs(60);
    let test: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            dojjail::__private::run_test(name, timeout);
            ms(start.elapsed())
        })
        .collect();
    let plain: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::thread::spawn(plain_test).join().expect("no panic");
            ms(start.elapsed())
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..batch / 2 {
                    dojjail::__private::run_test(name, timeout);
                }
            });
        }
    });
    Harness {
        name,
        runs,
        test: median(&test),
        plain: median(&plain),
        batch: batch / 2 * 2,
        batch_ms: ms(start.elapsed()),
    }
}

// ---------------------------------------------------------------------------------------
// Memory.

#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    pss: f64,
    private: f64,
    processes: usize,
}

/// PSS and private memory of one process, in KiB.
fn pss(pid: i32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0)
    };
    Some(Memory {
        pss: field("Pss:"),
        private: field("Private_Clean:") + field("Private_Dirty:"),
        processes: 1,
    })
}

/// PSS of process `pid` and all its descendants.
fn pss_of_tree(pid: i32) -> Memory {
    let mut total = Memory::default();
    let mut queue = vec![pid];
    while let Some(pid) = queue.pop() {
        if let Some(memory) = pss(pid) {
            total.pss += memory.pss;
            total.private += memory.private;
            total.processes += 1;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    total
}

fn mem_available_kib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemAvailable:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------
// The reference.

enum Reference {
    /// (scenario, n) to the JSON lines of each run.
    Measured(BTreeMap<(String, usize), Vec<Value>>),
    Missing(String),
}

impl Reference {
    /// The median time of a scenario over the runs (exec scenarios are stored as n = 1).
    fn get(&self, scenario: &str, n: usize) -> Option<f64> {
        let Reference::Measured(lines) = self else {
            return None;
        };
        let times: Vec<f64> = lines
            .get(&(scenario.to_owned(), n))?
            .iter()
            .filter_map(|line| line["ms"].as_f64())
            .collect();
        (!times.is_empty()).then(|| median(&times))
    }

    fn reach(&self, n: usize) -> (&'static str, &'static str) {
        let Reference::Measured(lines) = self else {
            return ("-", "-");
        };
        let Some(runs) = lines.get(&("chain_network_up".to_owned(), n)) else {
            return ("-", "-");
        };
        let all = |key: &str| -> &'static str {
            if runs.iter().all(|line| line[key].as_bool() == Some(true)) {
                "yes"
            } else {
                "NO"
            }
        };
        (
            all("neighbour_reachable"),
            if n > 2 {
                all("non_neighbour_blocked")
            } else {
                "n/a"
            },
        )
    }
}

fn peer_dir() -> PathBuf {
    std::env::var_os("DOJJAIL_PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/peer")))
}

/// Runs `peer_bench.py` `runs` times; each prints one JSON object per scenario.
fn run_reference(runs: usize, results: &mut Results) -> Reference {
    if !std::path::Path::new(REFERENCE_PYTHON).exists() {
        return Reference::Missing(
            "not installed: run ../shared/peer/setup-python-dojjail.sh".into(),
        );
    }
    if !nix::unistd::geteuid().is_root() {
        return Reference::Missing("needs root".into());
    }
    let script = peer_dir().join("peer_bench.py");
    let sizes = CHAIN_SIZES.map(|n| n.to_string()).join(",");
    let mut lines: BTreeMap<(String, usize), Vec<Value>> = BTreeMap::new();
    for run in 0..runs {
        progress(&format!("reference: run {} of {runs}", run + 1));
        let output = match Command::new(REFERENCE_PYTHON)
            .arg(&script)
            .args(["--sizes", &sizes])
            .output()
        {
            Ok(output) => output,
            Err(error) => return Reference::Missing(format!("{}: {error}", script.display())),
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(mut value) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let scenario = value["scenario"].as_str().unwrap_or_default().to_owned();
            let n = match scenario.as_str() {
                "exec_roundtrip" | "exec_shell_true" => 1,
                _ => value["n"].as_u64().unwrap_or(0) as usize,
            };
            value["run"] = json!(run);
            results.add(value.clone());
            lines.entry((scenario, n)).or_default().push(value);
        }
        if lines.is_empty() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("no output").to_owned();
            return Reference::Missing(format!("failed: {last}"));
        }
    }
    Reference::Measured(lines)
}

// ---------------------------------------------------------------------------------------

struct Machine {
    nproc: usize,
    kernel: String,
    cpu: String,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Machine {
        nproc: floor::online_cpus(),
        kernel,
        cpu,
    }
}
