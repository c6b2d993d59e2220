//! The seed's first example: start a host and look around inside it.
//!
//!     cargo run --example host

fn main() -> dojjail::Result<()> {
    let host = dojjail::Host::new("host-1");
    host.run()?;

    let output = host.exec_shell("hostname; whoami; ip a")?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));

    // Closures run inside the host too, and bring their values back.
    let hostname = host.exec(|| std::fs::read_to_string("/proc/sys/kernel/hostname"))?;
    let hostname = hostname.expect("procfs is readable");
    println!("a closure inside sees hostname {}", hostname.trim());
    Ok(())
}
