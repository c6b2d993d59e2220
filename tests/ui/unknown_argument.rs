fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo, foo = 1)]
fn unknown_key(_net: &dojjail::Network) {}

#[dojjail::test(topo)]
fn bare_path(_net: &dojjail::Network) {}

#[dojjail::test("topo")]
fn not_a_key(_net: &dojjail::Network) {}

fn main() {}
