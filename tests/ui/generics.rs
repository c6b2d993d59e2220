fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

#[dojjail::test(topology = topo)]
fn generic<T: Default>(_net: &dojjail::Network) {
    let _ = T::default();
}

#[dojjail::test(topology = topo)]
fn where_clause(_net: &dojjail::Network)
where
    u8: Copy,
{
}

fn main() {}
