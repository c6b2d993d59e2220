//! The seed's third example: a web server host and a client host on one network. The
//! server is a `#[dojjail::host]` entrypoint serving "Hello, World!" with axum on port 80;
//! the client fetches it with ureq from a closure running inside the client host.
//!
//!     cargo run --example web_server

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use dojjail::{Host, Network};

#[dojjail::host]
fn web_server() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                println!("{} - - \"GET / HTTP/1.1\" 200 -", peer.ip());
                "Hello, World!"
            }),
        );
        let listener = tokio::net::TcpListener::bind("0.0.0.0:80")
            .await
            .expect("port 80 is free inside the host");
        println!(" * Running on http://0.0.0.0:80");
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("the server runs");
    });
}

fn main() -> anyhow::Result<()> {
    let server_host = Host::new("web-server").entrypoint(web_server);
    let client_host = Host::new("web-client");

    let network = Network::new("router");
    network.connect(&server_host, &client_host)?;
    network.run()?;

    server_host.wait_listening(80, Duration::from_secs(10))?;
    let body = client_host.exec(|| -> anyhow::Result<String> {
        Ok(ureq::get("http://10.0.0.1/")
            .call()?
            .body_mut()
            .read_to_string()?)
    })??;
    println!("{body}");
    Ok(())
}
