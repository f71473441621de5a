//! `blazedb rekey` of a relay's encrypted store while `blazedb serve` has it open (another
//! process) is refused with an error that says to stop the other process, and changes
//! nothing: the relay goes on serving the file, which still opens with the old password.

mod net_common;

use std::time::Duration;

use net_common::{blazedb, put, start_relay};

#[test]
fn rekey_of_a_store_a_running_relay_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("relay");
    let password_file = dir.path().join("password.txt");
    std::fs::write(&password_file, "relay password\n").unwrap();
    let password_flag = ["--password-file", password_file.to_str().unwrap()];
    let (relay, url) = start_relay(&data, &password_flag, None);
    let store = data.join("relay.db");

    let client = dir.path().join("client.db");
    put(&client, "notes", r#"{"n": 1}"#);
    let sync = |what: &str| {
        let out = blazedb()
            .arg("sync")
            .arg(&client)
            .args([url.as_str(), "--once"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sync {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sync("before the rekey");

    let rekey = blazedb()
        .arg("rekey")
        .arg(&store)
        .args(password_flag)
        .env("BLAZEDB_NEW_PASSWORD", "new password")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&rekey.stderr);
    assert_eq!(rekey.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("open elsewhere"), "{stderr}");
    // The library's message names no command (it is used embedded); the CLI says which.
    assert!(
        stderr.contains("(another handle in this process, or another process)")
            && stderr.contains("(a `blazedb serve`, `listen` or `sync` holding the file"),
        "{stderr}"
    );

    // The relay still serves its store: a new write reaches it.
    let put = blazedb()
        .arg("put")
        .arg(&client)
        .args(["notes", r#"{"n": 2}"#])
        .output()
        .unwrap();
    assert!(put.status.success());
    sync("after the refused rekey");
    let (code, log) = relay.terminate(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{log}");

    let export = blazedb()
        .arg("export")
        .arg(&store)
        .arg("notes")
        .args(password_flag)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "the old password no longer opens the store: {}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&export.stdout).lines().count(), 2);
}
