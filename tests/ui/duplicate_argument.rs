fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo, topology = topo)]
fn duplicate_topology(_net: &dojjail::Network) {}

#[dojjail::test(topology = topo, timeout = "1s", timeout = "2s")]
fn duplicate_timeout(_net: &dojjail::Network) {}

fn main() {}
