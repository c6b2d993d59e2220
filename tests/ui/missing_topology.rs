#[dojjail::test]
fn no_arguments(_net: &dojjail::Network) {}

#[dojjail::test(timeout = "10s")]
fn only_timeout(_net: &dojjail::Network) {}

fn main() {}
