fn not_a_network() -> u32 {
    1
}

fn takes_an_argument(name: &str) -> dojjail::Network {
    dojjail::Network::new(name)
}

#[dojjail::test(topology = not_a_network)]
fn wrong_return(_net: &dojjail::Network) {}

#[dojjail::test(topology = takes_an_argument)]
fn wrong_parameters(_net: &dojjail::Network) {}

#[dojjail::test(topology = does_not_exist)]
fn unknown(_net: &dojjail::Network) {}

fn main() {}
