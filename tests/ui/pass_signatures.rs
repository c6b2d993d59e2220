// Every signature and attribute #[dojjail::test] accepts compiles without warnings.

#![deny(warnings)]

fn topo() -> dojjail::Network {
    dojjail::Network::new("n")
}

mod topologies {
    pub fn chain() -> dojjail::Network {
        dojjail::Network::new("chain")
    }
}

#[derive(Debug)]
struct Failure;

#[dojjail::test(topology = topo)]
fn no_parameter() {}

#[dojjail::test(topology = topo)]
fn network(net: &dojjail::Network) {
    assert_eq!(net.name(), "n");
}

#[dojjail::test(topology = topo)]
fn unused_network(_net: &dojjail::Network) {}

#[dojjail::test(topology = self::topo, timeout = "500ms")]
async fn async_body(net: &dojjail::Network) {
    async {}.await;
    let _ = net.name();
}

#[dojjail::test(topology = crate::topologies::chain, timeout = "2m")]
fn returns_result(net: &dojjail::Network) -> Result<(), Failure> {
    if net.name() == "chain" {
        Ok(())
    } else {
        Err(Failure)
    }
}

#[dojjail::test(topology = topologies::chain, timeout = "30s")]
async fn async_returns_result(_net: &dojjail::Network) -> Result<(), std::io::Error> {
    Ok(())
}

/// Doc comments stay on the test.
#[dojjail::test(topology = topo)]
#[should_panic(expected = "boom")]
fn should_panic(_net: &dojjail::Network) {
    panic!("boom")
}

#[dojjail::test(topology = topo,)]
#[ignore]
#[allow(unused_variables)]
pub fn ignored(net: &dojjail::Network) {
    let unused = 1;
}

#[dojjail::test(topology = topo)]
#[cfg(any())]
fn compiled_out(_net: &dojjail::Network) {
    this_does_not_exist();
}

mod tests {
    // Tests in a module, two of them, next to module-level items of the same names.
    fn topo() -> dojjail::Network {
        dojjail::Network::new("inner")
    }

    #[dojjail::test(topology = topo)]
    fn first(_net: &dojjail::Network) {}

    #[dojjail::test(topology = super::topo)]
    fn second() {}
}

fn main() {}
