fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo, timeout = 10)]
fn integer(_net: &dojjail::Network) {}

#[dojjail::test(topology = topo, timeout = "10x")]
fn unknown_unit(_net: &dojjail::Network) {}

#[dojjail::test(topology = topo, timeout = "ten seconds")]
fn words(_net: &dojjail::Network) {}

#[dojjail::test(topology = topo, timeout = "0s")]
fn zero(_net: &dojjail::Network) {}

#[dojjail::test(topology = topo, timeout)]
fn no_value(_net: &dojjail::Network) {}

fn main() {}
