//! `sync_watch` with a token tells `ClientEvent::TokenUnchecked` once while the peer checks no
//! token, not again at every reconnect to it, and again after a session in which the peer did
//! check one (a listener restarted on its port without its token); `sync_once` says it in its
//! report.

mod common;
mod transport_common;

use std::time::Duration;

use blazedb::sync::SessionConfig;
use blazedb_net::reconnect::{BackoffConfig, ClientEvent};
use blazedb_net::transport::{listen, ListenConfig};
use blazedb_net::{sync_once, sync_watch, ClientOptions, Endpoint, Listener};
use common::{count, open};
use tokio::sync::mpsc;
use transport_common::TEST_LIMIT;

/// `blazedb listen` for `db` on `addr`, with `token` or without.
async fn listener(
    db: std::sync::Arc<blazedb::Database>,
    addr: &str,
    token: Option<&str>,
) -> Listener {
    listen(
        db,
        ListenConfig {
            tcp: Some(addr.into()),
            token: token.map(Into::into),
            ..ListenConfig::default()
        },
    )
    .await
    .unwrap()
}

fn with_token() -> ClientOptions {
    ClientOptions {
        session: SessionConfig {
            token: "s3cret".into(),
            ..SessionConfig::default()
        },
        backoff: BackoffConfig {
            initial_ms: 20,
            max_ms: 100,
            multiplier: 2,
            jitter_percent: 0,
        },
        ..ClientOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn told_once_per_stretch_of_unchecked_sessions() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        let first = listener(b.clone(), "127.0.0.1:0", None).await;
        let addr = first.tcp_addr().unwrap().to_string();
        let url: Endpoint = first.urls()[0].parse().unwrap();

        let report = sync_once(a.clone(), &url, &with_token()).await.unwrap();
        assert!(report.token_unchecked, "{report:?}");
        assert_eq!(report.to_json()["token_unchecked"], true);

        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let watch = tokio::spawn({
            let (a, url) = (a.clone(), url.clone());
            async move {
                let stop = async {
                    let _ = stop_rx.await;
                };
                sync_watch(a, &url, &with_token(), stop, move |e| {
                    let _ = tx.send(e);
                })
                .await
            }
        });
        // Each listener in turn serves a session: a record written at the listener reaches
        // the client through it before the listener goes.
        let mut current = Some(first);
        let mut warnings = Vec::new();
        for (round, token) in [None, None, Some("s3cret"), None].into_iter().enumerate() {
            let l = match current.take() {
                Some(l) => l,
                None => listener(b.clone(), &addr, token).await,
            };
            b.insert("notes", [("round", round as i64)]).unwrap();
            while count(&a, "notes") < round as u64 + 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            l.shutdown().await;
            // The session's end, seen by the client, before the next listener.
            loop {
                match rx.recv().await.unwrap() {
                    ClientEvent::TokenUnchecked => warnings.push(round),
                    ClientEvent::SessionEnded { .. } => break,
                    _ => {}
                }
            }
        }
        let _ = stop_tx.send(());
        let report = watch.await.unwrap().unwrap();
        while let Ok(e) = rx.try_recv() {
            assert!(!matches!(e, ClientEvent::TokenUnchecked), "late: {e:?}");
        }
        assert_eq!(
            warnings,
            [0, 3],
            "told at the first session and after the checked one"
        );
        assert!(report.token_unchecked);
    })
    .await
    .expect("test took too long");
}
