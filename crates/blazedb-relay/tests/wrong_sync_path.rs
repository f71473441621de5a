//! A client given the relay's address without its sync path is told the path.

mod common;

use common::{TestRelay, TOKEN};

/// A sync URL with the relay's address but not its sync path (`ws://host:port`, `/`,
/// `/v1/query`) is told where the relay syncs, not only the HTTP status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_without_the_sync_path_is_told_the_path() {
    let relay = TestRelay::start(|_| {}).await;
    let options = blazedb_net::transport::ConnectOptions {
        bearer_token: Some(TOKEN.into()),
        ..Default::default()
    };
    for path in ["", "/", "/v1/query"] {
        let url: blazedb_net::Endpoint = format!("ws://{}{path}", relay.addr).parse().unwrap();
        match blazedb_net::connect(&url, &options).await {
            Err(e @ blazedb_net::TransportError::WebSocket { .. }) => {
                let text = e.to_string();
                assert!(text.contains("/v1/sync"), "{path:?}: {text}");
            }
            Err(other) => panic!("{path:?}: {other}"),
            Ok(_) => panic!("{path:?}: connected"),
        }
    }
    relay.stop().await;
}
