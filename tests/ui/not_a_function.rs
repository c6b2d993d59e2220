fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
struct Suite {
    name: String,
}

fn main() {
    let suite = Suite {
        name: String::new(),
    };
    let _ = suite.name;
}

#[dojjail::test(topology = topo)]
const NOT_A_FN: u8 = 1;
