//! The relay creates its data directory owner-only (0700) and its store files 0600 whatever
//! the umask allows; it refuses to start in a data directory that other users may write to or
//! that another user owns (they could replace or read the store), and warns about one that
//! other users may only read.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use blazedb_relay::{AuthConfig, Relay, RelayConfig, RelayError};
use common::TOKEN;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn config(data_dir: &Path) -> RelayConfig {
    RelayConfig {
        data_dir: data_dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        auth: AuthConfig::Token(TOKEN.into()),
        ..RelayConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_store_are_owner_only_and_unsafe_directories_are_refused() {
    // The usual umask, under which a plain mkdir and SQLite make what every user may read.
    // (The only test in this binary: the umask is the whole process's.)
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // A new data directory (its parent missing too) and a new store.
    let data = dir.path().join("parent").join("data");
    let relay = Relay::bind(config(&data)).await.expect("relay starts");
    relay
        .database()
        .insert("notes", [("text", "private")])
        .unwrap();
    assert_eq!(mode(&data), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let file = data.join(format!("relay.db{suffix}"));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(relay);

    // A data directory other users may write to: refused, saying how to fix it.
    for bad in [0o777, 0o770, 0o1777] {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(bad)).unwrap();
        let e = Relay::bind(config(&data)).await.expect_err("refused");
        let m = e.to_string();
        assert!(matches!(e, RelayError::DataDirUnsafe { .. }), "{m}");
        assert!(
            m.contains("other users may write to it") && m.contains("chmod 700"),
            "{m}"
        );
    }
    // One they may only list (as an older release made it) is used, with a warning.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(
        Relay::bind(config(&data))
            .await
            .expect("a readable directory is used"),
    );

    // A directory another user owns. Needs root to make one.
    if rustix::process::geteuid().is_root() {
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
        let nobody = rustix::fs::Uid::from_raw(65534);
        rustix::fs::chown(&theirs, Some(nobody), None).unwrap();
        let e = Relay::bind(config(&theirs)).await.expect_err("refused");
        let m = e.to_string();
        assert!(m.contains("belongs to user id 65534"), "{m}");
        assert!(!theirs.join("relay.db").exists());
    } else {
        println!("skipped the directory of another user: making one needs root");
    }
}
