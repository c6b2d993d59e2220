fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
#[test]
fn twice(_net: &dojjail::Network) {}

fn main() {}
