fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
fn two(net: &dojjail::Network, name: &str) {
    let _ = (net, name);
}

fn main() {}
