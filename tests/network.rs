//! Networks as a user sees them: who reaches whom, names, changes at run time, bad input,
//! and nothing left behind.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use dojjail::{Error, Host, Network};

const PORT: u16 = 7000;
const PATIENCE: Duration = Duration::from_millis(700);

/// A TCP listener inside `host` (the socket lives in the host's network namespace).
fn listen(host: &Host) -> TcpListener {
    host.exec(|| TcpListener::bind(("0.0.0.0", PORT)))
        .unwrap()
        .unwrap()
}

/// Whether a TCP connection gets through; reachable pairs get three tries, so a loaded
/// machine's slow first ARP does not read as a blocked edge.
fn tcp_reaches(from: &Host, to: Ipv4Addr) -> bool {
    (0..3).any(|_| {
        from.exec(|| TcpStream::connect_timeout(&SocketAddr::from((to, PORT)), PATIENCE).is_ok())
            .unwrap()
    })
}

/// Whether one ICMP echo gets an answer within 2 seconds (ping keeps trying until then,
/// so a slow first ARP on a loaded machine does not count as unreachable).
fn ping_reaches(from: &Host, to: Ipv4Addr) -> bool {
    from.exec_shell(format!("ping -c 1 -w 2 {to}"))
        .unwrap()
        .status
        .success()
}

fn udp_reaches(from: &Host, to: &Host, address: Ipv4Addr) -> bool {
    let receiver = to
        .exec(|| UdpSocket::bind(("0.0.0.0", PORT)))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    from.exec(|| {
        let sender = UdpSocket::bind("0.0.0.0:0").unwrap();
        sender.send_to(b"hello", (address, PORT)).unwrap();
    })
    .unwrap();
    let mut buffer = [0u8; 16];
    matches!(receiver.recv_from(&mut buffer), Ok((5, _))) && &buffer[..5] == b"hello"
}

fn chain() -> (Network, Vec<Host>) {
    let hosts: Vec<Host> = (1..=3).map(|i| Host::new(format!("h{i}"))).collect();
    let network = Network::new("chain");
    network.connect(&hosts[0], &hosts[1]).unwrap();
    network.connect(&hosts[1], &hosts[2]).unwrap();
    network.run().unwrap();
    (network, hosts)
}

#[test]
fn addresses_follow_first_appearance_from_the_first_usable_one() {
    let (a, b) = (Host::new("host-1"), Host::new("host-2"));
    let network = Network::new("router");
    network.connect(&a, &b).unwrap();
    assert_eq!(network.ip(&a), Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(network.ip(&b), Some(Ipv4Addr::new(10, 0, 0, 2)));
}

#[test]
fn chain_neighbours_reach_each_other_and_non_neighbours_do_not() {
    let (network, h) = chain();
    let ip = |i: usize| network.ip(&h[i]).unwrap();
    let _listeners: Vec<TcpListener> = h.iter().map(listen).collect();
    assert!(tcp_reaches(&h[0], ip(1)), "h1 -> h2 over TCP");
    assert!(tcp_reaches(&h[1], ip(2)), "h2 -> h3 over TCP");
    assert!(tcp_reaches(&h[2], ip(1)), "h3 -> h2 over TCP");
    assert!(!tcp_reaches(&h[0], ip(2)), "h1 must not reach h3 over TCP");
    assert!(!tcp_reaches(&h[2], ip(0)), "h3 must not reach h1 over TCP");
    assert!(ping_reaches(&h[0], ip(1)), "h1 -> h2 over ICMP");
    assert!(ping_reaches(&h[1], ip(2)), "h2 -> h3 over ICMP");
    assert!(
        !ping_reaches(&h[0], ip(2)),
        "h1 must not reach h3 over ICMP"
    );
}

#[test]
fn udp_flows_between_neighbours_only() {
    let (network, h) = chain();
    assert!(udp_reaches(&h[0], &h[1], network.ip(&h[1]).unwrap()));
    assert!(!udp_reaches(&h[0], &h[2], network.ip(&h[2]).unwrap()));
}

#[test]
fn an_edge_removed_at_run_time_stops_traffic_and_re_adding_restores_it() {
    let (network, h) = chain();
    let _listener = listen(&h[1]);
    let ip = network.ip(&h[1]).unwrap();
    assert!(tcp_reaches(&h[0], ip));
    network.disconnect(&h[0], &h[1]).unwrap();
    assert!(!tcp_reaches(&h[0], ip));
    assert!(!ping_reaches(&h[0], ip));
    network.connect(&h[0], &h[1]).unwrap();
    assert!(tcp_reaches(&h[0], ip));
}

#[test]
fn hosts_added_to_a_running_network_join_it() {
    let (network, h) = chain();
    let late = Host::new("late");
    network.connect(&late, &h[0]).unwrap();
    assert_eq!(network.ip(&late), Some(Ipv4Addr::new(10, 0, 0, 4)));
    assert!(ping_reaches(&late, network.ip(&h[0]).unwrap()));
    assert!(ping_reaches(&h[0], Ipv4Addr::new(10, 0, 0, 4)));
    assert!(!ping_reaches(&late, network.ip(&h[1]).unwrap()));
    let resolved = h[2].exec_shell("getent hosts late").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&resolved.stdout)
            .split_whitespace()
            .next(),
        Some("10.0.0.4")
    );
}

#[test]
fn two_networks_with_the_same_addresses_do_not_see_each_other() {
    let (first, h) = chain();
    let (second, g) = {
        let hosts: Vec<Host> = (1..=2).map(|i| Host::new(format!("g{i}"))).collect();
        let network = Network::new("twin");
        network.connect(&hosts[0], &hosts[1]).unwrap();
        network.run().unwrap();
        (network, hosts)
    };
    assert_eq!(first.ip(&h[1]), second.ip(&g[1]));
    let _listener = listen(&h[1]);
    // g1 reaches 10.0.0.2, which in its own network is g2, where nothing listens.
    assert!(!tcp_reaches(&g[0], Ipv4Addr::new(10, 0, 0, 2)));
    assert!(tcp_reaches(&h[0], Ipv4Addr::new(10, 0, 0, 2)));
    let seen_by_g2 = g[1]
        .exec(|| TcpListener::bind(("0.0.0.0", PORT)).is_ok())
        .unwrap();
    assert!(seen_by_g2, "the port is free in the other network's host");
}

#[test]
fn names_resolve_in_shells_and_closures() {
    let (web, client) = (Host::new("web-server"), Host::new("web-client"));
    let network = Network::new("names");
    network.connect(&web, &client).unwrap();
    network.run().unwrap();
    let shell = client.exec_shell("getent hosts web-server").unwrap();
    let text = String::from_utf8_lossy(&shell.stdout);
    assert!(text.starts_with("10.0.0.1"), "{text}");
    let resolved: Vec<SocketAddr> = client
        .exec(|| ("web-server", 80).to_socket_addrs().unwrap().collect())
        .unwrap();
    assert!(
        resolved.contains(&SocketAddr::from(([10, 0, 0, 1], 80))),
        "{resolved:?}"
    );
    assert!(ping_reaches(&client, network.ip(&web).unwrap()));
    assert!(client
        .exec_shell("ping -c 1 -w 2 web-server")
        .unwrap()
        .status
        .success());
}

#[test]
fn a_host_on_two_networks_reaches_both() {
    let (left, middle, right) = (Host::new("left"), Host::new("middle"), Host::new("right"));
    let a = Network::new("a").subnet("10.1.0.0/24").unwrap();
    let b = Network::new("b").subnet("10.2.0.0/24").unwrap();
    a.connect(&left, &middle).unwrap();
    b.connect(&middle, &right).unwrap();
    a.run().unwrap();
    b.run().unwrap();
    assert!(ping_reaches(&middle, a.ip(&left).unwrap()));
    assert!(ping_reaches(&middle, b.ip(&right).unwrap()));
    let interfaces = middle.exec_shell("ip -o -4 addr show").unwrap();
    let text = String::from_utf8_lossy(&interfaces.stdout);
    assert!(
        text.contains("eth0") && text.contains("10.1.0.2/24"),
        "{text}"
    );
    assert!(
        text.contains("eth1") && text.contains("10.2.0.1/24"),
        "{text}"
    );
}

#[test]
fn wait_listening_sees_a_server_start() {
    let (a, b) = (Host::new("server"), Host::new("client"));
    let network = Network::new("wait");
    network.connect(&a, &b).unwrap();
    network.run().unwrap();
    let timeout = a
        .wait_listening(8080, Duration::from_millis(50))
        .unwrap_err();
    assert!(matches!(timeout, Error::Timeout { .. }), "{timeout}");
    let _listener = a
        .exec(|| TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    a.wait_listening(8080, Duration::from_secs(5)).unwrap();
}

#[test]
fn describe_lists_hosts_addresses_and_edges() {
    let (a, b) = (Host::new("a"), Host::new("b"));
    let network = Network::new("desc");
    network.connect(&a, &b).unwrap();
    let text = network.describe();
    assert!(text.contains("10.0.0.0/24"), "{text}");
    assert!(text.contains("a") && text.contains("10.0.0.1"), "{text}");
    assert!(text.contains("edge a -- b"), "{text}");
    let dot = network.to_dot();
    assert!(
        dot.starts_with("graph \"desc\" {") && dot.contains("\"a\" -- \"b\";"),
        "{dot}"
    );
}

#[test]
fn bad_subnets_are_rejected() {
    for cidr in [
        "10.0.0.0",
        "10.0.0.300/24",
        "10.0.0.0/33",
        "10.0.0.7/24",
        "10.0.0.0/31",
    ] {
        let error = Network::new("bad").subnet(cidr).unwrap_err();
        assert!(
            matches!(error, Error::InvalidSubnet { .. }),
            "{cidr}: {error}"
        );
    }
}

#[test]
fn bad_addresses_are_rejected() {
    let network = Network::new("addresses");
    let (a, b) = (Host::new("a"), Host::new("b"));
    for (address, words) in [
        ([10, 0, 1, 1], "outside"),
        ([10, 0, 0, 0], "network address"),
        ([10, 0, 0, 255], "broadcast"),
    ] {
        let error = network
            .add_with_ip(&a, Ipv4Addr::from(address))
            .unwrap_err();
        assert!(matches!(error, Error::InvalidAddress { .. }), "{error}");
        assert!(error.to_string().contains(words), "{error}");
    }
    network.add_with_ip(&a, Ipv4Addr::new(10, 0, 0, 9)).unwrap();
    let taken = network
        .add_with_ip(&b, Ipv4Addr::new(10, 0, 0, 9))
        .unwrap_err();
    assert!(taken.to_string().contains("has it already"), "{taken}");
    assert_eq!(
        network.hosts().len(),
        1,
        "failed additions leave no member behind"
    );
}

#[test]
fn a_full_subnet_is_an_error() {
    let network = Network::new("tiny").subnet("192.168.7.0/30").unwrap();
    let hosts: Vec<Host> = (0..3).map(|i| Host::new(format!("t{i}"))).collect();
    network.connect(&hosts[0], &hosts[1]).unwrap();
    let error = network.connect(&hosts[1], &hosts[2]).unwrap_err();
    assert!(matches!(error, Error::SubnetFull { .. }), "{error}");
    assert_eq!(network.hosts().len(), 2);
}

#[test]
fn connecting_a_host_to_itself_or_reusing_a_name_is_an_error() {
    let network = Network::new("rules");
    let a = Host::new("same");
    let error = network.connect(&a, &a).unwrap_err();
    assert!(error.to_string().contains("itself"), "{error}");
    let twin = Host::new("same");
    let error = network.connect(&a, &twin).unwrap_err();
    assert!(error.to_string().contains("another host named"), "{error}");
    assert!(
        network.hosts().is_empty(),
        "nothing half-added: {:?}",
        network.hosts()
    );
}

#[test]
fn a_host_failing_to_start_tears_the_whole_network_down() {
    // Enough hosts that they start on several threads: the others are running by the
    // time the bad one fails.
    let good: Vec<Host> = (0..16).map(|i| Host::new(format!("good-{i}"))).collect();
    let bad = Host::new("bad").entrypoint_named("no::such::entrypoint", &());
    let network = Network::new("half");
    for host in &good {
        network.connect(host, &bad).unwrap();
    }
    let error = network.run().unwrap_err();
    assert!(matches!(error, Error::UnknownEntrypoint { .. }), "{error}");
    assert!(!network.is_running());
    for host in &good {
        assert!(
            !host.is_running(),
            "{}, started before the failure, was torn down",
            host.name()
        );
    }

    // Once the cause is fixed, the same network and hosts run.
    let _ = bad.clone().entrypoint(idle);
    network.run().unwrap();
    assert!(good.iter().all(Host::is_running) && bad.is_running());
    // Its interface is eth0 again: nothing of the failed start stayed.
    assert!(only_eth0(&good[0]), "{:?}", interfaces(&good[0]));
    assert!(ping_reaches(&good[0], network.ip(&bad).unwrap()));
}

/// A main process that stays until its host is killed.
#[dojjail::host]
fn idle() {
    std::thread::sleep(std::time::Duration::from_secs(3600));
}

#[test]
fn host_lookup_by_name() {
    let (a, b) = (Host::new("alpha"), Host::new("beta"));
    let network = Network::new("lookup");
    network.connect(&a, &b).unwrap();
    assert_eq!(network.host("beta").name(), "beta");
    assert!(network.get("gamma").is_none());
    let panic = std::panic::catch_unwind(|| network.host("gamma")).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("alpha, beta"), "{message}");
}

/// Not a test on its own: builds a network, reports, and waits to be killed.
#[test]
#[ignore = "helper process for nothing_remains_after_the_test_process_ends"]
fn leak_helper() {
    if std::env::var_os("DOJJAIL_TEST_LEAK_HELPER").is_none() {
        return;
    }
    let (_network, hosts) = chain();
    let pids: Vec<String> = hosts.iter().map(|h| h.pid().unwrap().to_string()).collect();
    println!("pids: {}", pids.join(" "));
    std::thread::sleep(Duration::from_secs(1000));
}

#[test]
fn nothing_remains_after_the_test_process_ends() {
    let links_before = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap()
        .stdout;
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "leak_helper", "--ignored", "--nocapture"])
        .env("DOJJAIL_TEST_LEAK_HELPER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let line = BufReader::new(helper.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("pids: "))
        .expect("the helper reports its hosts");
    let pids: Vec<String> = line["pids: ".len()..]
        .split(' ')
        .map(str::to_owned)
        .collect();
    let namespaces: Vec<String> = pids
        .iter()
        .map(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/net"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alive = || {
        pids.iter()
            .any(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    while alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(), "host processes outlived the test process");
    let net_namespaces_in_use: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    for ns in &namespaces {
        assert!(
            !net_namespaces_in_use.contains(ns),
            "namespace {ns} is still in use"
        );
    }
    let links_after = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(
        String::from_utf8_lossy(&links_before).lines().count(),
        String::from_utf8_lossy(&links_after).lines().count(),
        "interfaces were left in this namespace"
    );
}

#[test]
fn a_thousand_hosts_come_up_and_only_neighbours_talk() {
    // The reference stops at 99 hosts; a Linux bridge takes 1023 ports.
    let network = Network::new("big").subnet("10.8.0.0/16").unwrap();
    let hosts: Vec<Host> = (0..1000).map(|i| Host::new(format!("n{i}"))).collect();
    for pair in hosts.windows(2) {
        network.connect(&pair[0], &pair[1]).unwrap();
    }
    network.run().unwrap();
    assert_eq!(network.ip(&hosts[999]), Some(Ipv4Addr::new(10, 8, 3, 232)));
    let last = &hosts[999];
    assert!(ping_reaches(last, network.ip(&hosts[998]).unwrap()));
    assert!(!ping_reaches(last, network.ip(&hosts[0]).unwrap()));
    let resolved = hosts[500].exec_shell("getent hosts n501").unwrap();
    assert!(String::from_utf8_lossy(&resolved.stdout).starts_with("10.8.1.246"));
}

#[dojjail::host]
fn resolve_peer() -> String {
    ("peer", 0)
        .to_socket_addrs()
        .map(|mut addresses| addresses.next().unwrap().ip().to_string())
        .unwrap_or_else(|e| format!("unresolved: {e}"))
}

#[test]
fn entrypoints_start_once_their_network_is_wired() {
    let (quick, peer) = (
        Host::new("quick").entrypoint(resolve_peer),
        Host::new("peer"),
    );
    let network = Network::new("wired");
    network.connect(&quick, &peer).unwrap();
    network.run().unwrap();
    assert_eq!(quick.wait::<String>().unwrap(), "10.0.0.2");
    // The network stays usable after a member's entrypoint returned.
    let late = Host::new("late-joiner");
    network.connect(&late, &peer).unwrap();
    assert!(ping_reaches(&late, Ipv4Addr::new(10, 0, 0, 2)));
}

#[test]
fn networks_sharing_hosts_start_at_once_without_deadlock() {
    for round in 0..5 {
        let (a, b) = (
            Host::new(format!("a{round}")),
            Host::new(format!("b{round}")),
        );
        let first = Network::new("first");
        let second = Network::new("second").subnet("10.1.0.0/24").unwrap();
        first.connect(&a, &b).unwrap();
        second.connect(&b, &a).unwrap();
        let (one, two) = run_at_once(&first, &second);
        one.unwrap();
        two.unwrap();
        assert!(ping_reaches(&a, second.ip(&b).unwrap()));
    }
}

#[test]
fn a_failed_add_to_a_running_network_leaves_it_as_it_was() {
    let (network, h) = chain();
    let broken = Host::new("broken").entrypoint_named("no::such::entrypoint", &());
    let error = network.connect(&broken, &h[0]).unwrap_err();
    assert!(matches!(error, Error::UnknownEntrypoint { .. }), "{error}");
    assert_eq!(network.hosts().len(), 3);
    assert_eq!(network.edges().len(), 2);
    // The next host takes the slot (address, bridge port) the failed one would have had.
    let fine = Host::new("fine");
    network.connect(&fine, &h[0]).unwrap();
    assert_eq!(network.ip(&fine), Some(Ipv4Addr::new(10, 0, 0, 4)));
    assert!(ping_reaches(&fine, network.ip(&h[0]).unwrap()));
}

#[dojjail::host]
fn seven() -> u32 {
    7
}

#[test]
fn a_failed_network_run_leaves_stopped_hosts_stopped() {
    let finished = Host::new("finished").entrypoint(seven);
    finished.run().unwrap();
    assert_eq!(finished.wait::<u32>().unwrap(), 7);
    let other = Host::new("other");
    let network = Network::new("late");
    network.connect(&finished, &other).unwrap();
    let error = network.run().unwrap_err();
    assert!(matches!(error, Error::Stopped { .. }), "{error}");
    // Hosts do not restart, not even through a network's failed start.
    let again = finished.run();
    assert!(matches!(again, Err(Error::Stopped { .. })), "{again:?}");
    assert!(
        !other.is_running(),
        "the network's failed start stopped what it started"
    );
}

/// Runs two networks on two threads, released at the same moment.
fn run_at_once(a: &Network, b: &Network) -> (dojjail::Result<()>, dojjail::Result<()>) {
    at_once(|| a.run(), || b.run())
}

/// Runs `a` and `b` on two threads, released at the same moment.
fn at_once<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    let barrier = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            barrier.wait();
            a()
        });
        let second = s.spawn(|| {
            barrier.wait();
            b()
        });
        (first.join().unwrap(), second.join().unwrap())
    })
}

#[test]
fn a_failed_network_does_not_stop_a_host_another_network_uses() {
    for round in 0..10 {
        let shared = Host::new("shared");
        let bad = Host::new("bad").entrypoint_named("no::such::entrypoint", &());
        let other = Host::new("other");
        let failing = Network::new("failing");
        failing.connect(&shared, &bad).unwrap();
        let working = Network::new("working");
        working.connect(&shared, &other).unwrap();
        let (failed, worked) = run_at_once(&failing, &working);
        assert!(failed.is_err(), "round {round}");
        worked.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            shared.is_running(),
            "round {round}: the failing network stopped it"
        );
        assert!(ping_reaches(&other, working.ip(&shared).unwrap()));
    }
}

/// A network whose start fails late: after its hosts are wired, at the /etc/hosts of `r`,
/// a host that ran before (its /etc/hosts made read-only from inside). `a` ran before
/// too; `b` is new.
fn failing_late() -> (Network, Host, Host, Host) {
    let a = Host::new("pre-a");
    a.run().unwrap();
    let r = unwritable("pre-r");
    let b = Host::new("new-b");
    let network = Network::new("late");
    network.connect(&a, &b).unwrap();
    network.connect(&b, &r).unwrap();
    let error = network.run().unwrap_err();
    assert!(error.to_string().contains("/etc/hosts"), "{error}");
    (network, a, b, r)
}

/// The output of `command` run by a shell in `host`, which must succeed.
fn shell(host: &Host, command: &str) -> String {
    let output = host.exec_shell(command).unwrap();
    assert!(output.status.success(), "{command}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn hosts_file(host: &Host) -> String {
    shell(host, "cat /etc/hosts")
}

/// The names of the interfaces in `host`'s network namespace (from /proc/net/dev: the
/// host's /sys is the machine's).
fn interfaces(host: &Host) -> Vec<String> {
    shell(host, "cat /proc/net/dev")
        .lines()
        .filter_map(|line| Some(line.split_once(':')?.0.trim().to_owned()))
        .collect()
}

/// Whether `host` has eth0 and no eth1: a failed start left no interface and no gap.
fn only_eth0(host: &Host) -> bool {
    let names = interfaces(host);
    names.iter().any(|n| n == "eth0") && !names.iter().any(|n| n == "eth1")
}

#[test]
fn a_late_failure_leaves_hosts_that_ran_before_running_without_its_names() {
    let (network, a, b, _r) = failing_late();
    assert!(!network.is_running());
    assert!(!b.is_running(), "the host it started is new again");
    assert!(
        a.is_running(),
        "a host that ran before the failed start was stopped"
    );
    let names = hosts_file(&a);
    assert!(
        !names.contains("new-b"),
        "names of the failed network remain:\n{names}"
    );
}

#[test]
fn a_late_failure_can_be_retried_and_every_host_gets_eth0() {
    let (network, a, b, r) = failing_late();
    shell(&r, "mount -o remount,rw,bind /etc/hosts");
    network.run().unwrap();
    // The new host, and those that ran before, got eth0.
    for host in [&a, &b, &r] {
        assert!(only_eth0(host), "{}: {:?}", host.name(), interfaces(host));
    }
}

#[test]
fn a_host_a_failed_network_started_keeps_none_of_its_names() {
    let (_failed, _a, b, _r) = failing_late();
    let other = Network::new("other");
    other.add(&b).unwrap();
    other.run().unwrap();
    let names = hosts_file(&b);
    assert!(
        !names.contains("pre-a"),
        "names of the failed network remain:\n{names}"
    );
}

#[test]
fn a_failed_link_batch_leaves_no_interface_behind_and_can_be_retried() {
    // `early` ran before and gets its pair first; the one for `squatter` cannot be created,
    // as it has an interface of its own named eth0 already.
    let early = Host::new("early");
    early.run().unwrap();
    let squatter = Host::new("squatter");
    squatter.run().unwrap();
    shell(&squatter, "ip link add eth0 type bridge");
    let bystander = Host::new("bystander");
    let network = Network::new("clash");
    network.connect(&early, &squatter).unwrap();
    network.connect(&squatter, &bystander).unwrap();
    let error = network.run().unwrap_err();
    assert!(matches!(error, Error::Netlink { .. }), "{error}");
    assert!(
        early.is_running() && squatter.is_running(),
        "they ran before"
    );
    let left = interfaces(&early);
    assert!(!left.iter().any(|n| n == "eth0"), "left behind: {left:?}");

    shell(&squatter, "ip link del eth0");
    network.run().unwrap();
    for host in [&early, &squatter, &bystander] {
        assert!(only_eth0(host), "{}: {:?}", host.name(), interfaces(host));
    }
    assert!(ping_reaches(&early, network.ip(&squatter).unwrap()));
}

/// A running host whose /etc/hosts cannot be written: a network with it fails late.
fn unwritable(name: &str) -> Host {
    let host = Host::new(name);
    host.run().unwrap();
    let remount = host
        .exec_shell("mount -o remount,ro,bind /etc/hosts")
        .unwrap();
    assert!(remount.status.success(), "{remount:?}");
    host
}

#[test]
fn two_networks_failing_at_once_leave_the_host_they_share_new() {
    let rounds: usize = std::env::var("DOJJAIL_TEST_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(20);
    for round in 0..rounds {
        let shared = Host::new("shared");
        let one = Network::new("one");
        one.connect(&shared, &unwritable("stuck-1")).unwrap();
        let two = Network::new("two");
        two.connect(&shared, &unwritable("stuck-2")).unwrap();
        let (first, second) = run_at_once(&one, &two);
        assert!(first.is_err() && second.is_err(), "round {round}");
        assert!(
            !shared.is_running(),
            "round {round}: both networks failed, yet the host one of them started runs: {first:?} {second:?}"
        );
        shared.run().unwrap();
    }
}

#[test]
fn a_host_its_user_ran_stays_running_when_a_network_that_started_it_fails() {
    for round in 0..20 {
        let wanted = Host::new("wanted");
        let network = Network::new("doomed");
        network.connect(&wanted, &unwritable("stuck")).unwrap();
        let (failed, ran) = at_once(|| network.run(), || wanted.run());
        assert!(failed.is_err(), "round {round}");
        ran.unwrap();
        assert!(
            wanted.is_running(),
            "round {round}: Host::run returned, yet the failing network stopped the host"
        );
    }
}
