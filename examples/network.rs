//! The seed's second example: two hosts on one network, one pings the other.
//!
//!     cargo run --example network

use dojjail::{Host, Network};

fn main() -> dojjail::Result<()> {
    let host_1 = Host::new("host-1");
    let host_2 = Host::new("host-2");

    let network = Network::new("router");
    network.connect(&host_1, &host_2)?;
    network.run()?;

    let ping = host_1.exec_shell("ping -c 3 10.0.0.2")?;
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    eprint!("{}", String::from_utf8_lossy(&ping.stderr));
    Ok(())
}
