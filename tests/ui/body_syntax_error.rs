// A syntax error in the body is reported once, by rustc, where it is.

fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
fn syntax_error(_net: &dojjail::Network) {
    let = 1;
}

fn main() {}
