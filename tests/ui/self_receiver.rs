fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

struct Suite;

impl Suite {
    #[dojjail::test(topology = topo)]
    fn method(&self) {}
}

fn main() {
    Suite.method();
}
