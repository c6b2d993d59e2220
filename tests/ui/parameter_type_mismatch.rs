fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
fn takes_a_string(name: &str) {
    let _ = name;
}

fn main() {}
