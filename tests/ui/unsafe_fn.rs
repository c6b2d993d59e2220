fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
unsafe fn not_safe(_net: &dojjail::Network) {}

fn main() {}
