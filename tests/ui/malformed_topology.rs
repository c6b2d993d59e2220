fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = "topo")]
fn string(_net: &dojjail::Network) {}

#[dojjail::test(topology = topo())]
fn call(_net: &dojjail::Network) {}

#[dojjail::test(topology = 1 + 1)]
fn expression(_net: &dojjail::Network) {}

#[dojjail::test(topology)]
fn no_value(_net: &dojjail::Network) {}

#[dojjail::test(topology = , timeout = "1s")]
fn empty_value(_net: &dojjail::Network) {}

fn main() {}
