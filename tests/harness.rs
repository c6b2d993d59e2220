//! `#[dojjail::test]` as its users write it: each test in a fresh topology of its own.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::time::Duration;

use dojjail::{Host, Network};

/// Serves `greeting` over HTTP on port 80 with axum.
#[dojjail::host]
fn web_server(greeting: String) {
    println!("serving {greeting:?} on port 80");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async move {
        let app =
            axum::Router::new().route("/", axum::routing::get(move || async move { greeting }));
        let listener = tokio::net::TcpListener::bind("0.0.0.0:80").await.unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

fn two_hosts() -> Network {
    two_hosts_greeting("Hello, World!")
}

fn two_hosts_greeting(greeting: &str) -> Network {
    let server = Host::new("web-server").entrypoint_with(web_server, (greeting.to_owned(),));
    let client = Host::new("web-client");
    let network = Network::new("router");
    network.connect(&server, &client).unwrap();
    network
}

fn plain_pair() -> Network {
    let network = Network::new("pair");
    network.connect(&Host::new("a"), &Host::new("b")).unwrap();
    network
}

fn fetch(url: &str) -> String {
    ureq::get(url)
        .call()
        .expect("the request succeeds")
        .body_mut()
        .read_to_string()
        .expect("a text body")
}

#[dojjail::test(topology = two_hosts)]
fn serves_hello(net: &Network) {
    net.host("web-server")
        .wait_listening(80, Duration::from_secs(10))
        .unwrap();
    let body = net
        .host("web-client")
        .exec(|| fetch("http://web-server/"))
        .unwrap();
    assert_eq!(body, "Hello, World!");
}

#[dojjail::test(topology = plain_pair)]
fn udp_between_two_hosts(net: &Network) {
    let receiver = net
        .host("b")
        .exec(|| UdpSocket::bind("0.0.0.0:5353"))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    net.host("a")
        .exec(|| {
            UdpSocket::bind("0.0.0.0:0")
                .unwrap()
                .send_to(b"ping", "b:5353")
                .unwrap()
        })
        .unwrap();
    let mut buffer = [0u8; 8];
    let (len, from) = receiver.recv_from(&mut buffer).unwrap();
    assert_eq!(&buffer[..len], b"ping");
    assert_eq!(from.ip().to_string(), "10.0.0.1");
}

#[dojjail::test(topology = plain_pair)]
async fn async_bodies_run_on_tokio(net: &Network) {
    let b = net.host("b");
    let listener = b
        .exec(|| TcpListener::bind("0.0.0.0:9000"))
        .unwrap()
        .unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.map(|(_, peer)| peer) });
    let a = net.host("a");
    let connected = a
        .exec(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(tokio::net::TcpStream::connect("10.0.0.2:9000"))
                .is_ok()
        })
        .unwrap();
    assert!(connected);
    let peer: SocketAddr = accept.await.unwrap().unwrap();
    assert_eq!(peer.ip().to_string(), "10.0.0.1");
}

#[dojjail::test(topology = plain_pair)]
fn bodies_may_return_results(net: &Network) -> Result<(), dojjail::Error> {
    let output = net.host("a").exec_shell("hostname")?;
    assert_eq!(output.stdout, b"a\n");
    Ok(())
}

#[dojjail::test(topology = plain_pair)]
#[should_panic(expected = "deliberately")]
fn should_panic_works(_net: &Network) {
    panic!("deliberately failing");
}

/// Two tests with the same topology, addresses and port, each serving its own greeting:
/// when they run at once, each must see only its own server.
fn greeting_one() -> Network {
    two_hosts_greeting("one")
}

fn greeting_two() -> Network {
    two_hosts_greeting("two")
}

#[dojjail::test(topology = greeting_one)]
fn isolated_twin_one(net: &Network) {
    net.host("web-server")
        .wait_listening(80, Duration::from_secs(10))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(
            net.host("web-client")
                .exec(|| fetch("http://10.0.0.1/"))
                .unwrap(),
            "one"
        );
    }
}

#[dojjail::test(topology = greeting_two)]
fn isolated_twin_two(net: &Network) {
    net.host("web-server")
        .wait_listening(80, Duration::from_secs(10))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(
            net.host("web-client")
                .exec(|| fetch("http://10.0.0.1/"))
                .unwrap(),
            "two"
        );
    }
}

// Tests that fail on purpose; `failures_are_reported_from_outside` runs them.

#[dojjail::test(topology = two_hosts)]
#[ignore = "fails on purpose; run by failures_are_reported_from_outside"]
fn deliberately_failing(net: &Network) {
    net.host("web-server")
        .wait_listening(80, Duration::from_secs(10))
        .unwrap();
    // A command with inherited output: it lands in the host's log.
    let status = net
        .host("web-client")
        .command("sh")
        .args(["-c", "echo client-was-here"])
        .status();
    assert!(status.unwrap().success());
    panic!("the body failed on purpose");
}

#[dojjail::test(topology = plain_pair, timeout = "1s")]
#[ignore = "hangs on purpose; run by timeouts_kill_the_topology_and_name_the_hosts"]
fn deliberately_hanging(_net: &Network) {
    std::thread::sleep(Duration::from_secs(3600));
}

fn run_ignored(name: &str) -> (bool, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn failures_are_reported_from_outside() {
    let (passed, text) = run_ignored("deliberately_failing");
    assert!(!passed, "{text}");
    assert!(text.contains("the body failed on purpose"), "{text}");
    assert!(text.contains("--- output of host web-server ---"), "{text}");
    assert!(
        text.contains("serving \"Hello, World!\" on port 80"),
        "{text}"
    );
    assert!(
        text.contains("--- output of host web-client ---\nclient-was-here"),
        "{text}"
    );
    assert!(text.contains("--- topology ---"), "{text}");
    assert!(text.contains("edge web-server -- web-client"), "{text}");
}

#[test]
fn timeouts_kill_the_topology_and_name_the_hosts() {
    let (passed, text) = run_ignored("deliberately_hanging");
    assert!(!passed, "{text}");
    assert!(text.contains("timed out after 1s"), "{text}");
    assert!(text.contains("hosts still running: a, b"), "{text}");
}

#[dojjail::test(topology = plain_pair, timeout = "120s")]
#[ignore = "hangs on purpose; run by a_killed_test_run_leaves_no_host_behind"]
fn deliberately_hanging_long(_net: &Network) {
    std::thread::sleep(Duration::from_secs(3600));
}

/// Pids of the processes named `dojjail-init` that descend from `ancestor`.
fn inits_below(ancestor: u32) -> Vec<u32> {
    let parent_of = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c == "dojjail-init\n")
        })
        .filter(|pid| {
            let mut current = *pid;
            while let Some(parent) = parent_of(current) {
                if parent == ancestor {
                    return true;
                }
                if parent <= 1 {
                    break;
                }
                current = parent;
            }
            false
        })
        .collect()
}

fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_killed_test_run_leaves_no_host_behind() {
    let mut run = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "deliberately_hanging_long"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut inits = Vec::new();
    assert!(
        eventually(|| {
            inits = inits_below(run.id());
            inits.len() == 2
        }),
        "the topology of the test came up"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let gone = |pid: &u32| !std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        eventually(|| inits.iter().all(gone)),
        "hosts outlived the killed test run: {inits:?}"
    );
}

#[test]
fn without_user_namespaces_a_test_fails_with_the_cause() {
    // A user namespace of our own where the limit on nested user namespaces is 0.
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg("echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" --exact serves_hello")
        .arg(std::env::current_exe().unwrap())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "the test must not pass: {text}");
    assert!(text.contains("user namespaces are unavailable"), "{text}");
    assert!(text.contains("sysctl"), "names the fix: {text}");
}
