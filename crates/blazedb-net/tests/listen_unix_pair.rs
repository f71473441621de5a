//! `listen` on a Unix domain socket and `sync_once` to a `unix:///path` URL: the replicas
//! converge; a stale socket file left by a dead listener is replaced, a live one is not
//! stolen, a file that is not a socket is refused and kept, and shutdown removes the file.
//! The socket is owner-only (0600) whatever the umask, and a listener's token is required on
//! it as on TCP (the Unix socket has no TLS, so no client certificates either).

mod common;
mod transport_common;

use blazedb_net::reconnect::ClientError;
use blazedb_net::transport::{listen, ListenConfig, TransportError};
use blazedb_net::{sync_once, ClientOptions, Endpoint, NetError};
use common::{count, dump, fill, live_cells, open};
use transport_common::TEST_LIMIT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener_and_client_converge() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 1_000, 100, "a");
        fill(&b, "d", 100, 10, "b");
        let cells_a = live_cells(&a);
        let path = dir.path().join("b.sock");
        // A socket file nobody listens on, as a killed listener leaves behind.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());

        let cfg = || ListenConfig {
            unix: Some(path.clone()),
            ..ListenConfig::default()
        };
        let listener = listen(b.clone(), cfg()).await.unwrap();
        assert_eq!(listener.urls(), [format!("unix://{}", path.display())]);
        // A second listener on the same live socket is refused.
        let second = listen(b.clone(), cfg()).await;
        assert!(
            matches!(second, Err(TransportError::Bind { .. })),
            "{second:?}"
        );

        let url: Endpoint = format!("unix://{}", path.display()).parse().unwrap();
        let report = sync_once(a.clone(), &url, &ClientOptions::default())
            .await
            .unwrap();
        assert_eq!(report.traffic.cells_sent, cells_a);
        assert_eq!(dump(&a), dump(&b));

        listener.shutdown().await;
        assert!(!path.exists(), "shutdown removes the socket file");
    })
    .await
    .expect("test took too long");
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "b");
    let path = dir.path().join("b.db");
    let before = std::fs::read(&path).unwrap();
    let e = refused_listen(&db, &path, "a listener replaced the file").await;
    assert!(
        e.contains(&format!(
            "{} exists and is not a socket: choose another path",
            path.display()
        )),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is untouched"
    );
}

/// A path longer than a socket path may be is refused by the listener (it binds at a short
/// staging path and links into place, so it would bind there and no client could connect)
/// and by the client, each saying what to do; nothing is left behind.
#[tokio::test]
async fn a_socket_path_too_long_to_connect_to_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "b");
    let name = "s".repeat(blazedb_net::limits::UNIX_SOCKET_PATH_BYTES_MAX);
    let path = dir.path().join(format!("{name}.sock"));
    let e = refused_listen(&db, &path, "a listener bound where no client can connect").await;
    let says = format!(
        "longer than the {} a socket path may have: use a shorter path",
        blazedb_net::limits::UNIX_SOCKET_PATH_BYTES_MAX
    );
    assert!(e.contains(&says), "{e}");
    assert!(!path.exists(), "nothing left behind");
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 3, "only the database and its WAL files");

    let client = sync_once(
        open(dir.path(), "a"),
        &Endpoint::Unix(path.clone()),
        &ClientOptions::default(),
    )
    .await;
    let Err(e) = client else {
        panic!("connected to a path too long to exist");
    };
    assert!(e.to_string().contains(&says), "{e}");
}

/// Other users of the machine cannot connect: the socket file is 0600 from the moment it
/// appears at its path (the process umask, 022 here, would make it 0755: connecting needs
/// write permission, so the umask alone decides who may, and 002 or 000 opens it to the group
/// or to everyone). Nothing is left behind next to it. A token is still required.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_owner_only_and_the_token_is_still_required() {
    use std::os::unix::fs::PermissionsExt;
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
        fill(&a, "c", 10, 10, "a");
        let path = dir.path().join("b.sock");
        let before: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        let listener = listen(
            b.clone(),
            ListenConfig {
                unix: Some(path.clone()),
                token: Some("s3cret".into()),
                ..ListenConfig::default()
            },
        )
        .await
        .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let after: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(after.len(), before.len() + 1, "only the socket was added");

        let url: Endpoint = format!("unix://{}", path.display()).parse().unwrap();
        let r = sync_once(a.clone(), &url, &ClientOptions::default()).await;
        assert!(
            matches!(&r, Err(ClientError::Session(NetError::Sync { error, .. }))
                if error.code == blazedb::sync::ErrorCode::AuthFailed),
            "{r:?}"
        );
        assert_eq!(count(&b, "c"), 0, "nothing flowed without the token");
        listener.shutdown().await;
        assert!(!path.exists());
    })
    .await
    .expect("test took too long");
}

/// The error of a `listen` on the Unix socket `path` that must fail (`bound`: what it means
/// if it did not).
async fn refused_listen(
    db: &std::sync::Arc<blazedb::Database>,
    path: &std::path::Path,
    bound: &str,
) -> String {
    let r = listen(
        db.clone(),
        ListenConfig {
            unix: Some(path.to_path_buf()),
            ..ListenConfig::default()
        },
    )
    .await;
    match r {
        Ok(_) => panic!("{bound}"),
        Err(e) => e.to_string(),
    }
}
