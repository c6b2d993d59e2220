fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
fn returns_a_number(_net: &dojjail::Network) -> u32 {
    1
}

fn main() {}
