//! Hosts as a user sees them: what runs inside, what comes back, what is left behind.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use dojjail::{Error, Host, Namespaces};

#[dojjail::host]
fn forty_two() -> u32 {
    42
}

#[dojjail::host]
fn add(a: i32, b: i32) -> i32 {
    a + b
}

#[dojjail::host]
fn explode() -> u32 {
    panic!("the entrypoint blew up")
}

#[dojjail::host]
fn hostname_inside() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

fn running(name: &str) -> Host {
    let host = Host::new(name);
    host.run().expect("host starts");
    host
}

fn shell(host: &Host, command: &str) -> String {
    let output = host.exec_shell(command).expect("shell runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The pid namespace of a process, as the link text of /proc/PID/ns/pid.
fn pid_namespace(pid: u32) -> String {
    fs::read_link(format!("/proc/{pid}/ns/pid"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Pids of every process in pid namespace `ns`, as seen from here.
fn processes_in(ns: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/ns/pid"))
                .is_ok_and(|link| link.to_string_lossy() == ns)
        })
        .collect()
}

fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    check()
}

#[test]
fn exec_returns_the_closures_value() {
    let host = running("host-1");
    assert_eq!(host.exec(|| 1 + 1).unwrap(), 2);
}

#[test]
fn exec_borrows_from_the_caller() {
    let host = running("borrower");
    let words = ["a".to_owned(), "b".to_owned()];
    let joined = host.exec(|| words.join("+")).unwrap();
    assert_eq!(joined, "a+b");
    assert_eq!(words.len(), 2);
}

#[test]
fn exec_sees_the_hosts_hostname() {
    let host = running("host-name-check");
    let name = host
        .exec(|| nix::unistd::gethostname().unwrap().into_string().unwrap())
        .unwrap();
    assert_eq!(name, "host-name-check");
    assert_eq!(shell(&host, "hostname"), "host-name-check\n");
}

#[test]
fn whoami_is_root() {
    let host = running("who");
    assert_eq!(shell(&host, "id -u; whoami"), "0\nroot\n");
}

#[test]
fn loopback_is_up_with_both_addresses() {
    let host = running("loopy");
    let reached = host
        .exec(|| {
            ["127.0.0.1:0", "[::1]:0"].map(|address| {
                let listener = TcpListener::bind(address).unwrap();
                TcpStream::connect(listener.local_addr().unwrap()).is_ok()
            })
        })
        .unwrap();
    assert_eq!(reached, [true, true]);
    let addresses = shell(&host, "ip -o addr show dev lo");
    assert!(addresses.contains("127.0.0.1/8"), "{addresses}");
    assert!(addresses.contains("::1/128"), "{addresses}");
}

#[test]
fn exec_runs_in_the_hosts_network_not_ours() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = running("netns");
    let connected = host
        .exec(|| TcpStream::connect(("127.0.0.1", port)).is_ok())
        .unwrap();
    assert!(
        !connected,
        "a listener outside the host was reachable from inside"
    );
}

#[test]
fn tokio_inside_exec_uses_the_hosts_network() {
    let outside = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = outside.local_addr().unwrap().port();
    let host = running("tokio-net");
    let reached = host
        .exec(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .is_ok()
                })
                .await
                .unwrap()
            })
        })
        .unwrap();
    assert!(!reached);
}

#[test]
fn proc_shows_only_the_hosts_processes() {
    let host = running("procview");
    let pids = shell(&host, "cd /proc && echo [0-9]*");
    let pids: Vec<u32> = pids
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // The init is pid 1, and the shell itself is the only other process.
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.contains(&1));
    assert_eq!(shell(&host, "cat /proc/1/comm"), "dojjail-init\n");
}

#[test]
fn each_host_has_its_own_tmp() {
    let a = running("tmp-a");
    let b = running("tmp-b");
    shell(&a, "echo secret > /tmp/file");
    assert_eq!(shell(&a, "cat /tmp/file"), "secret\n");
    let seen = b.exec_shell("cat /tmp/file").unwrap();
    assert!(!seen.status.success());
    assert!(!std::path::Path::new("/tmp/file").exists());
}

#[test]
fn a_panic_in_exec_comes_back_with_its_message() {
    let host = running("panicky");
    let error = host.exec(|| panic!("boom {}", 7)).unwrap_err();
    assert!(
        matches!(&error, Error::ExecPanicked { message, .. } if message == "boom 7"),
        "{error}"
    );
    assert_eq!(host.exec(|| 3).unwrap(), 3, "the host survives the panic");
}

#[test]
fn exec_from_two_threads_runs_both_at_once() {
    let host = running("parallel");
    let barrier = std::sync::Barrier::new(2);
    thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| host.exec(|| barrier.wait()).unwrap());
        }
    });
}

#[test]
fn entrypoint_value_comes_back_from_wait_once() {
    let host = Host::new("calc").entrypoint(forty_two);
    host.run().unwrap();
    assert_eq!(host.wait::<u32>().unwrap(), 42);
    let again = host.wait::<u32>().unwrap_err();
    assert!(matches!(again, Error::NothingToWait { .. }), "{again}");
}

#[test]
fn entrypoint_takes_arguments() {
    let host = Host::new("adder").entrypoint_with(add, (40, 2));
    host.run().unwrap();
    assert_eq!(host.wait::<i32>().unwrap(), 42);
}

#[test]
fn entrypoint_runs_inside_the_host() {
    let host = Host::new("inside").entrypoint(hostname_inside);
    host.run().unwrap();
    assert_eq!(host.wait::<String>().unwrap(), "inside");
}

#[test]
fn entrypoint_panic_comes_back_from_wait() {
    let host = Host::new("exploding").entrypoint(explode);
    host.run().unwrap();
    let error = host.wait::<u32>().unwrap_err();
    assert!(
        matches!(&error, Error::EntrypointPanicked { message, .. } if message == "the entrypoint blew up"),
        "{error}"
    );
}

#[test]
fn waiting_without_an_entrypoint_is_an_error() {
    let host = running("idle");
    let error = host.wait::<u32>().unwrap_err();
    assert!(matches!(error, Error::NothingToWait { .. }), "{error}");
    assert!(host.is_running());
}

#[test]
fn host_stops_when_its_entrypoint_returns() {
    let host = Host::new("short-lived").entrypoint(forty_two);
    host.run().unwrap();
    host.wait::<u32>().unwrap();
    assert!(eventually(|| !host.is_running()));
    let error = host.exec(|| ()).unwrap_err();
    assert!(matches!(error, Error::Stopped { .. }), "{error}");
}

#[test]
fn bad_names_are_rejected() {
    for (name, words) in [
        ("", "empty"),
        (&"x".repeat(65)[..], "longer than 64"),
        ("nul\0byte", "NUL"),
        ("a/b", "'/'"),
    ] {
        let error = Host::new(name).run().unwrap_err();
        assert!(matches!(error, Error::InvalidHostName { .. }), "{error}");
        assert!(error.to_string().contains(words), "{error}");
    }
    Host::new("x".repeat(64)).run().unwrap();
}

#[test]
fn unknown_entrypoint_names_are_rejected() {
    let host = Host::new("nobody").entrypoint_named("no::such::function", &());
    let error = host.run().unwrap_err();
    assert!(matches!(error, Error::UnknownEntrypoint { .. }), "{error}");
    assert!(
        error.to_string().contains("forty_two"),
        "lists known names: {error}"
    );
    assert!(!host.is_running());
}

#[test]
fn exec_on_a_host_that_never_ran_is_an_error() {
    let host = Host::new("not-yet");
    assert!(matches!(host.exec(|| 1), Err(Error::NotRunning { .. })));
    assert!(matches!(
        host.exec_shell("true"),
        Err(Error::NotRunning { .. })
    ));
}

#[test]
fn run_is_idempotent() {
    let host = running("twice");
    let pid = host.pid();
    host.run().unwrap();
    assert_eq!(host.pid(), pid);
}

#[test]
fn commands_get_exit_codes_stdin_and_environment() {
    let host = running("commands");
    let status = host.command("sh").args(["-c", "exit 3"]).status().unwrap();
    assert_eq!(status.code(), Some(3));
    let output = host
        .command("sh")
        .args(["-c", "echo $GREETING; cat"])
        .env("GREETING", "hello")
        .stdin(dojjail::Stdio::piped())
        .stdout(dojjail::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(b"from stdin\n")
                .unwrap();
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(output.stdout, b"hello\nfrom stdin\n");
    let missing = host.command("no-such-program").output().unwrap_err();
    assert!(matches!(missing, Error::Spawn { .. }), "{missing}");
}

#[test]
fn a_command_that_cannot_start_says_why() {
    let host = running("refusals");
    let cases = [
        (
            host.command("true").current_dir("/no/such/dir").status(),
            "entering its working directory \"/no/such/dir\": No such file or directory",
        ),
        (host.command("").status(), "the program name is empty"),
        (
            host.command("echo").arg("a\0b").status(),
            "an argument, an environment entry or the working directory contains a NUL byte",
        ),
        (host.command("/tmp").status(), "Permission denied"),
    ];
    for (result, expected) in cases {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Spawn { .. }), "{error:?}");
        assert!(error.to_string().contains(expected), "{error}");
    }
    assert_eq!(shell(&host, "echo still here"), "still here\n");
}

#[test]
fn commands_take_megabytes_of_arguments_up_to_the_kernel_limit() {
    let host = running("big-args");
    // A megabyte of arguments and a large environment entry: far more than one message
    // between the controller and the init may carry.
    let args: Vec<String> = (0..10).map(|i| i.to_string().repeat(100_000)).collect();
    let output = host
        .command("sh")
        .args(["-c", "echo $# ${#BIG} ${#9}", "sh"])
        .args(&args)
        .env("BIG", "y".repeat(120_000))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "10 120000 100000\n"
    );
    // Past ARG_MAX the kernel refuses, and says so.
    let too_many: Vec<String> = (0..40).map(|_| "x".repeat(100_000)).collect();
    let error = host.command("true").args(&too_many).status().unwrap_err();
    match &error {
        Error::Spawn { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::ArgumentListTooLong)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(shell(&host, "echo still here"), "still here\n");
}

#[test]
fn orphans_inside_are_reaped() {
    let host = running("reaper");
    // The subshell exits at once, so `sleep` is reparented to the host's init.
    shell(&host, "(sleep 0.2 &)");
    let no_zombies = eventually(|| {
        let states = shell(&host, "cat /proc/[0-9]*/stat 2>/dev/null || true");
        !states
            .lines()
            .any(|line| line.split_whitespace().nth(2) == Some("Z"))
            && !states.contains("(sleep)")
    });
    assert!(no_zombies, "a zombie stayed in the host");
}

#[test]
fn kill_leaves_no_process_of_the_host() {
    let host = running("doomed");
    let mut child = host.command("sleep").arg("1000").spawn().unwrap();
    let ns = pid_namespace(host.pid().unwrap());
    assert_eq!(processes_in(&ns).len(), 2);
    host.kill().unwrap();
    assert!(processes_in(&ns).is_empty());
    assert!(!child.wait().unwrap().success());
    assert!(matches!(host.exec(|| 1), Err(Error::Stopped { .. })));
}

#[test]
fn dropping_the_last_handle_kills_the_host() {
    let host = running("dropped");
    let ns = pid_namespace(host.pid().unwrap());
    drop(host);
    assert!(processes_in(&ns).is_empty());
}

/// Not a test on its own: the controller that `controller_killed_with_sigkill_leaves_nothing`
/// starts and kills.
#[test]
#[ignore = "helper process for controller_killed_with_sigkill_leaves_nothing"]
fn sigkill_helper() {
    if std::env::var_os("DOJJAIL_TEST_SIGKILL_HELPER").is_none() {
        return;
    }
    let host = running("victim");
    let _sleeper = host.command("sleep").arg("1000").spawn().unwrap();
    println!("{}", pid_namespace(host.pid().unwrap()));
    thread::sleep(Duration::from_secs(1000));
}

#[test]
fn controller_killed_with_sigkill_leaves_nothing() {
    let mut controller = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigkill_helper", "--ignored", "--nocapture"])
        .env("DOJJAIL_TEST_SIGKILL_HELPER", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(controller.stdout.take().unwrap()).lines();
    let ns = lines
        .find_map(|line| line.ok().filter(|l| l.starts_with("pid:")))
        .expect("the helper reports its host's pid namespace");
    assert_eq!(processes_in(&ns).len(), 2, "init and sleep run");
    controller.kill().unwrap();
    controller.wait().unwrap();
    assert!(
        eventually(|| processes_in(&ns).is_empty()),
        "processes of the host outlived their controller"
    );
}

#[test]
fn many_hosts_at_once_are_distinct() {
    let hosts: Vec<Host> = (0..8).map(|i| running(&format!("many-{i}"))).collect();
    let names: HashSet<String> = hosts
        .iter()
        .map(|h| {
            h.exec(|| nix::unistd::gethostname().unwrap().into_string().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(names.len(), 8);
}

/// Not a test on its own: tries to start a host where user namespaces are forbidden.
#[test]
#[ignore = "helper process for a_machine_without_user_namespaces_gets_a_clear_error"]
fn no_userns_helper() {
    if std::env::var_os("DOJJAIL_TEST_NO_USERNS_HELPER").is_none() {
        return;
    }
    let error = Host::new("forbidden").run().unwrap_err();
    println!("error: {error}");
    assert!(matches!(error, Error::UserNamespacesUnavailable { .. }));
}

/// Runs the ignored test `helper` of this binary as root of a user namespace of its own in
/// which the sysctl `user.<limit>` is 0, with `env` set; returns its stdout once it passed.
fn run_helper_under_limit(limit: &str, helper: &str, env: &str) -> String {
    run_helper_after(&format!("echo 0 > /proc/sys/user/{limit}"), helper, env)
}

/// Runs the ignored test `helper` of this binary as root of a user and mount namespace of
/// its own, after the shell command `setup`, with `env` set; returns its stdout once it
/// passed.
fn run_helper_after(setup: &str, helper: &str, env: &str) -> String {
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(format!(
            "{setup} && exec \"$0\" --exact {helper} --ignored --nocapture"
        ))
        .arg(std::env::current_exe().unwrap())
        .env(env, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

#[test]
fn a_machine_without_user_namespaces_gets_a_clear_error() {
    let text = run_helper_under_limit(
        "max_user_namespaces",
        "no_userns_helper",
        "DOJJAIL_TEST_NO_USERNS_HELPER",
    );
    assert!(text.contains("user namespaces are unavailable"), "{text}");
    assert!(text.contains("user.max_user_namespaces is 0"), "{text}");
    assert!(text.contains("sysctl"), "names the fix: {text}");
}

/// Not a test on its own: starts a host where no more network namespaces may be created.
#[test]
#[ignore = "helper process for a_namespace_limit_is_a_typed_error"]
fn namespace_limit_helper() {
    if std::env::var_os("DOJJAIL_TEST_LIMIT_HELPER").is_none() {
        return;
    }
    let error = Host::new("limited").run().unwrap_err();
    println!("error: {error}");
    assert!(matches!(error, Error::LimitReached { .. }), "{error:?}");
    // No init of the refused host is left, and hosts that fit the limit still start.
    assert_eq!(inits_of_this_process(), 0);
    let fitting = Host::new("fitting").namespaces(Namespaces::ALL - Namespaces::NET);
    fitting.run().unwrap();
    assert_eq!(inits_of_this_process(), 1);
}

/// Not a test on its own: starts hosts whose /proc cannot be mounted (something is mounted
/// over a file in /proc, as Docker does to hide some), many times, so that some inits fail
/// before the zygote has mapped their ids and some after.
#[test]
#[ignore = "helper process for a_failed_setup_step_is_reported_and_leaves_no_init"]
fn setup_failure_helper() {
    if std::env::var_os("DOJJAIL_TEST_SETUP_FAILURE").is_none() {
        return;
    }
    for i in 0..30 {
        let error = Host::new(format!("fails-{i}")).run().unwrap_err();
        match &error {
            Error::Setup { step, .. } if step == "mount the host's own /proc" => {}
            other => panic!("start {i}: expected the failed setup step, got: {other}"),
        }
    }
    assert_eq!(inits_of_this_process(), 0, "inits left behind");
    println!("every start failed at its /proc mount");
}

#[test]
fn a_failed_setup_step_is_reported_and_leaves_no_init() {
    let text = run_helper_after(
        "mount --bind /dev/null /proc/uptime",
        "setup_failure_helper",
        "DOJJAIL_TEST_SETUP_FAILURE",
    );
    assert!(
        text.contains("every start failed at its /proc mount"),
        "{text}"
    );
}

/// Not a test on its own: starts a host where user namespaces nest as deep as they may.
#[test]
#[ignore = "helper process for user_namespaces_nested_too_deep_are_a_typed_error"]
fn nesting_limit_helper() {
    if std::env::var_os("DOJJAIL_TEST_NESTING_HELPER").is_none() {
        return;
    }
    let error = Host::new("too-deep").run().unwrap_err();
    println!("error: {error}");
    assert!(matches!(error, Error::LimitReached { .. }), "{error:?}");
    assert_eq!(inits_of_this_process(), 0);
}

#[test]
fn user_namespaces_nested_too_deep_are_a_typed_error() {
    // `levels` user namespaces below ours, each made by unshare(1) running the next.
    let nested = |levels: usize| {
        let mut command = Command::new("unshare");
        command.args(["--user", "--map-root-user"]);
        for _ in 1..levels {
            command.args(["unshare", "--user", "--map-root-user"]);
        }
        command
    };
    // As deep as they go from here (this process may be in one of its own already).
    let deepest = (1..=33)
        .rev()
        .find(|&levels| nested(levels).arg("true").status().unwrap().success())
        .expect("user namespaces nest");
    let output = nested(deepest)
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nesting_limit_helper",
            "--ignored",
            "--nocapture",
        ])
        .env("DOJJAIL_TEST_NESTING_HELPER", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("user and pid namespaces nest at most 32 deep"),
        "{text}"
    );
}

/// How many hosts' inits are children of this process (inits are forked with CLONE_PARENT).
fn inits_of_this_process() -> usize {
    let me = std::process::id().to_string();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            comm.ends_with("(dojjail-init") && rest.split(' ').nth(1) == Some(&me)
        })
        .count()
}

#[test]
fn a_namespace_limit_is_a_typed_error() {
    let text = run_helper_under_limit(
        "max_net_namespaces",
        "namespace_limit_helper",
        "DOJJAIL_TEST_LIMIT_HELPER",
    );
    assert!(
        text.contains("limit on namespaces (user.max_net_namespaces = 0,"),
        "names the limit first: {text}"
    );
    assert!(text.contains("raise the limit"), "names the fix: {text}");
}

/// Not a test on its own: starts a persistent host, reports its pid and returns.
#[test]
#[ignore = "helper process for persistent_hosts_outlive_their_controller"]
fn persistent_helper() {
    if std::env::var_os("DOJJAIL_TEST_PERSISTENT_HELPER").is_none() {
        return;
    }
    let host = Host::new("survivor").persistent(true);
    host.run().unwrap();
    println!("pid: {}", host.pid().unwrap());
}

/// SIGKILLs a process when dropped, so a failing test leaves nothing running.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn persistent_hosts_outlive_their_controller() {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "persistent_helper", "--ignored", "--nocapture"])
        .env("DOJJAIL_TEST_PERSISTENT_HELPER", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(helper.stdout.take().unwrap()).lines();
    let pid: i32 = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("pid: ").map(str::to_owned))
        .expect("the helper reports its host")
        .parse()
        .unwrap();
    let _cleanup = KillOnDrop(pid);
    // The host keeps the helper's stdout open: drain it on the side, no EOF will come.
    thread::spawn(move || lines.for_each(drop));
    assert!(helper.wait().unwrap().success());
    // Alive, not a zombie waiting to be reaped.
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            let state = stat.split_once(") ").map(|(_, rest)| &rest[..1]);
            stat.contains("(dojjail-init)") && !matches!(state, Some("Z" | "X"))
        })
    };
    thread::sleep(Duration::from_millis(200));
    assert!(alive(), "the persistent host died with its controller");
    // Killing its init takes the whole host down.
    drop(_cleanup);
    assert!(eventually(|| !alive()));
}

#[test]
fn a_host_may_share_namespaces_with_its_creator() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = Host::new("shares-net").namespaces(Namespaces::ALL - Namespaces::NET);
    host.run().unwrap();
    let reached = host
        .exec(|| TcpStream::connect(("127.0.0.1", port)).is_ok())
        .unwrap();
    assert!(
        reached,
        "without a network namespace of its own the host shares ours"
    );
    assert_eq!(shell(&host, "hostname"), "shares-net\n");
}

#[test]
fn commands_keep_their_streams_when_many_run_at_once() {
    let host = running("crowded");
    let sleepers: Vec<dojjail::HostChild> = (0..80)
        .map(|_| host.command("sleep").arg("30").spawn().unwrap())
        .collect();
    let output = host.exec_shell("echo out; echo err >&2").unwrap();
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    drop(sleepers);
}

#[test]
fn closures_may_use_hosts_from_inside_hosts() {
    let outer = running("outer");
    let other = running("other");
    let name = outer
        .exec(|| other.exec(|| nix::unistd::gethostname().unwrap().into_string().unwrap()))
        .unwrap()
        .unwrap();
    assert_eq!(name, "other");
    let started_inside = outer
        .exec(|| {
            let inner = Host::new("started-inside");
            inner.run().map(|()| shell(&inner, "hostname"))
        })
        .unwrap()
        .unwrap();
    assert_eq!(started_inside, "started-inside\n");
}

#[test]
fn commands_inherit_only_their_standard_streams() {
    // What this test process itself passes on (descriptors without close-on-exec).
    let mut expected: Vec<String> = (0..4).map(|fd| fd.to_string()).collect();
    for entry in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let fd: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
        // SAFETY: only asking for the flags of a descriptor that may be open.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let flags = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_GETFD);
        if fd > 3 && flags.is_ok_and(|flags| flags & libc_fd_cloexec() == 0) {
            expected.push(fd.to_string());
        }
    }
    expected.sort();
    let host = running("descriptors");
    // A command still running holds its own reply channel: the next must not inherit it.
    let mut background = host.command("sleep").arg("30").spawn().unwrap();
    let listed = host.command("ls").arg("/proc/self/fd").output().unwrap();
    let _ = background.kill();
    let mut seen: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    seen.sort();
    assert_eq!(seen, expected, "the descriptors `ls` found open in itself");
}

fn libc_fd_cloexec() -> i32 {
    nix::fcntl::FdFlag::FD_CLOEXEC.bits()
}

#[test]
fn commands_start_with_default_signal_handling() {
    let host = running("signals");
    let status = shell(&host, "grep -E '^Sig(Blk|Ign)' /proc/self/status");
    let mask = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split('\t').nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "signals blocked: {status}");
    let sigpipe = 1 << (nix::sys::signal::Signal::SIGPIPE as u32 - 1);
    assert_eq!(mask("SigIgn:") & sigpipe, 0, "SIGPIPE ignored: {status}");
}

#[test]
fn a_host_on_no_network_resolves_its_own_name() {
    let host = running("lonely");
    assert!(shell(&host, "getent hosts lonely").contains("lonely"));
}

#[test]
fn wait_listening_sees_an_ipv6_listener() {
    let host = running("six");
    let _listener = host
        .exec(|| TcpListener::bind("[::]:7070"))
        .unwrap()
        .unwrap();
    host.wait_listening(7070, Duration::from_secs(5)).unwrap();
}

/// Not a test on its own: kills this process's zygotes, then starts hosts (alone in its
/// process, so no other test's start meets a dying zygote).
#[test]
#[ignore = "helper process for hosts_start_after_their_zygotes_were_killed"]
fn zygote_kill_helper() {
    if std::env::var_os("DOJJAIL_TEST_ZYGOTE_KILL").is_none() {
        return;
    }
    let _first = running("before");
    let me = std::process::id().to_string();
    let mut killed = 0;
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        if comm.ends_with("(dojjail-zygote") && rest.split(' ').nth(1) == Some(&me) {
            let pid: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
            let pid = nix::unistd::Pid::from_raw(pid);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            // Dead, not dying: a request sent to a dying zygote fails that one start.
            let dead = || {
                fs::read_to_string(entry.path().join("stat"))
                    .map_or(true, |stat| stat.contains(") Z "))
            };
            assert!(eventually(dead), "the zygote did not die");
            killed += 1;
        }
    }
    assert!(killed > 0, "no zygote found");
    for i in 0..4 {
        running(&format!("after-{i}"));
    }
    println!("hosts started after {killed} zygotes were killed");
}

#[test]
fn hosts_start_after_their_zygotes_were_killed() {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "zygote_kill_helper", "--ignored", "--nocapture"])
        .env("DOJJAIL_TEST_ZYGOTE_KILL", "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while helper.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = helper.kill();
            panic!("starting hosts hung after the zygotes were killed");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = helper.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("hosts started after"), "{text}");
}
