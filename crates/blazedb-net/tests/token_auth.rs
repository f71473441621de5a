//! A listener with a token refuses a peer with a wrong or missing token with `AUTH_FAILED`
//! before any data flows either way, and serves the peer with the right token.

mod common;
mod transport_common;

use blazedb::sync::{ErrorCode, SessionConfig};
use blazedb_net::reconnect::ClientError;
use blazedb_net::transport::ListenConfig;
use blazedb_net::{sync_once, ClientOptions, EndReason, Endpoint, NetError};
use common::{count, dump, fill, open};
use transport_common::{listen_tcp, next_ended, TEST_LIMIT};

fn with_token(token: &str) -> ClientOptions {
    ClientOptions {
        session: SessionConfig {
            token: token.into(),
            ..SessionConfig::default()
        },
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_token_is_refused_before_data() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 200, 20, "a");
        fill(&b, "d", 200, 20, "b");
        let listener = listen_tcp(
            b.clone(),
            ListenConfig {
                token: Some("correct horse".into()),
                ..ListenConfig::default()
            },
        )
        .await;
        let mut events = listener.events();
        let url: Endpoint = listener.urls()[0].parse().unwrap();

        for token in ["wrong", ""] {
            let r = sync_once(a.clone(), &url, &with_token(token)).await;
            let Err(ClientError::Session(NetError::Sync { error, report })) = r else {
                panic!("token {token:?}: expected AUTH_FAILED, got {r:?}");
            };
            assert_eq!(error.code, ErrorCode::AuthFailed, "{error}");
            assert!(error.remote, "the listener refused");
            assert!(error.message.contains("token"), "{}", error.message);
            assert_eq!(report.stats.cells_sent, 0);
            assert_eq!(report.stats.cells_received, 0);

            let (server, _) = next_ended(&mut events).await;
            let server = server.unwrap();
            assert!(
                matches!(&server.end, EndReason::Protocol(e) if e.code == ErrorCode::AuthFailed),
                "{server:?}"
            );
            assert_eq!(server.stats.cells_sent, 0);
            assert_eq!(server.stats.cells_received, 0);
        }
        assert_eq!(count(&b, "c"), 0);
        assert_eq!(count(&a, "d"), 0);

        sync_once(a.clone(), &url, &with_token("correct horse"))
            .await
            .unwrap();
        assert_eq!(dump(&a), dump(&b));
        listener.shutdown().await;
    })
    .await
    .expect("test took too long");
}
