//! Every error is one `error: ` line on stderr and a non-zero exit: 2 for a wrong command line
//! (including malformed JSON arguments), 1 for a failed command.

mod common;

use common::{run_blazedb, TestDb};

#[test]
fn malformed_json_arguments_exit_2() {
    let db = TestDb::new();
    let run = db
        .run("put", &["bugs", r#"{"title": "unterminated"#])
        .failure(2);
    assert!(
        run.stderr.contains("JSON argument: invalid JSON"),
        "{}",
        run.stderr
    );
    let run = db.run("put", &["bugs", "[1, 2]"]).failure(2);
    assert!(
        run.stderr.contains("expected a JSON object, got an array"),
        "{}",
        run.stderr
    );
    assert!(!db.path.exists(), "a rejected put must not create the file");

    let id = db.put("bugs", "{}");
    db.run("update", &["bugs", &id, "nope"]).failure(2);
}

#[test]
fn clap_errors_are_one_line_and_exit_2() {
    let db = TestDb::new();
    let run = db.run("get", &["bugs", "not-a-uuid"]).failure(2);
    assert!(run.stderr.contains("invalid record id"), "{}", run.stderr);
    let run = db.run("put", &["bugs"]).failure(2);
    assert!(run.stderr.contains("<JSON>"), "{}", run.stderr);
    let run = run_blazedb(None, &["frobnicate"]).failure(2);
    assert!(run.stderr.contains("frobnicate"), "{}", run.stderr);
}

#[test]
fn a_file_that_is_not_a_database_is_named_as_such() {
    let db = TestDb::new();
    std::fs::write(&db.path, "hello, I am a text file\n").unwrap();
    let run = db.run("stats", &[]).failure(1);
    assert!(
        run.stderr.contains("not a BlazeDB database"),
        "{}",
        run.stderr
    );
}

/// SQLite takes a 0-byte file for a new database: a command that needs an existing one
/// refuses it instead of reporting (and writing) a healthy empty database into it.
#[test]
fn an_empty_file_is_not_a_database() {
    let db = TestDb::new();
    std::fs::write(&db.path, "").unwrap();
    for (command, rest) in [
        ("check", &[][..]),
        ("stats", &[]),
        ("export", &["c"]),
        ("query", &["c"]),
        ("vacuum", &[]),
        ("rekey", &["--decrypt"]),
    ] {
        let run = db.run(command, rest).failure(1);
        assert!(
            run.stderr.contains("is an empty file, not a database"),
            "{command}: {}",
            run.stderr
        );
        assert_eq!(std::fs::metadata(&db.path).unwrap().len(), 0, "{command}");
    }
}

#[test]
fn help_lists_the_commands_but_not_debug() {
    let run = run_blazedb(None, &["--help"]).success();
    for command in [
        "put", "get", "update", "delete", "query", "history", "import", "export",
    ] {
        assert!(run.stdout.contains(command), "{command} missing from help");
    }
    assert!(!run.stdout.contains("debug"), "{}", run.stdout);
}

/// `blazedb COMMAND PATH REST..` (no password).
fn run_on(command: &str, path: &std::path::Path, rest: &[&str]) -> common::Run {
    let mut args = vec![std::ffi::OsStr::new(command), path.as_os_str()];
    args.extend(rest.iter().map(std::ffi::OsStr::new));
    run_blazedb(None, &args)
}

/// `sync`'s second argument is a database file or a peer URL. Something that reads like an
/// address or a URL of a scheme `sync` does not speak is refused (exit 2, with what to
/// write), never taken for the name of a new database file; nor is DB_A created.
#[test]
fn sync_refuses_what_is_neither_a_file_nor_a_url() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    for (b, says) in [
        ("127.0.0.1:7500", "tcp://127.0.0.1:7500"),
        (
            "http://127.0.0.1:7420/v1/sync",
            "write ws://127.0.0.1:7420/v1/sync",
        ),
        (
            "https://relay.example/v1/sync",
            "write wss://relay.example/v1/sync",
        ),
        ("ws:127.0.0.1:7420", "write ws://127.0.0.1:7420"),
        ("tcp:/127.0.0.1:7500", "write tcp://127.0.0.1:7500,"),
    ] {
        let run = run_on("sync", &a, &[b, "--once"]).failure(2);
        assert!(run.stderr.contains(says), "{b}: {}", run.stderr);
        assert!(!a.exists(), "{b}: DB_A was created");
        assert!(!std::path::Path::new(b).exists());
    }
    // An existing file of such a name is a file.
    let odd = dir.path().join("host:1");
    std::fs::write(&odd, "").unwrap();
    let run = run_on("sync", &a, &[odd.to_str().unwrap(), "--once"]);
    assert!(!run.stderr.contains("peer URL"), "{}", run.stderr);
}

/// A sync that fails to open DB_B leaves no DB_A it created; an invalid `--where` is a
/// command-line error (exit 2, as for `query`).
#[test]
fn a_failed_sync_creates_nothing_and_a_bad_filter_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (a, junk) = (dir.path().join("fresh.db"), dir.path().join("junk.db"));
    std::fs::write(&junk, "not a database").unwrap();
    let run = run_on("sync", &a, &[junk.to_str().unwrap(), "--once"]).failure(1);
    assert!(
        run.stderr.contains("not a BlazeDB database"),
        "{}",
        run.stderr
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("junk.db")]);
    let b = dir.path().join("b.db");
    let run = run_on(
        "sync",
        &a,
        &[b.to_str().unwrap(), "--once", "--where", "status =="],
    )
    .failure(2);
    assert!(run.stderr.contains("invalid expression"), "{}", run.stderr);
}

/// A network sync that fails before anything arrives (here: nothing listens at the URL)
/// says what to check and removes the database file it created for DB_A; an existing file
/// stays.
#[test]
fn a_failed_network_sync_says_what_to_check_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let fresh = dir.path().join("fresh.db");
    let run = run_on("sync", &fresh, &[&url, "--once"]).failure(1);
    assert!(
        run.stderr
            .contains("nothing listens there: is `blazedb listen` or `blazedb serve` running"),
        "{}",
        run.stderr
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    let db = TestDb::new();
    db.put("bugs", "{}");
    db.run("sync", &[&url, "--once"]).failure(1);
    assert_eq!(db.run("export", &["bugs"]).success().json_lines().len(), 1);
}

/// `listen --token ""` would accept anyone: refused, as `serve` refuses it.
#[test]
fn listen_refuses_an_empty_token() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let run = run_on("listen", &db, &["--tcp", "127.0.0.1:0", "--token", ""]).failure(2);
    assert!(run.stderr.contains("the token is empty"), "{}", run.stderr);
    assert!(!db.exists());
}

/// A listener's token shorter than the relay's minimum (16 bytes) is refused (exit 2), as
/// `serve` refuses one, naming where it came from and how to make a long one: nothing slows
/// down a peer that guesses it. From --token, --token-file and BLAZEDB_TOKEN alike.
#[test]
fn listen_refuses_a_short_token_wherever_it_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let says = |run: &common::Run, from: &str| {
        assert!(
            run.stderr.contains(&format!(
                "the token ({from}) is 3 bytes long, and a listener's token must have at least 16"
            )) && run.stderr.contains("openssl rand -hex 32 > token.txt")
                && run.stderr.contains("--token-file token.txt"),
            "{}",
            run.stderr
        );
    };
    let run = run_on("listen", &db, &["--tcp", "127.0.0.1:0", "--token", "abc"]).failure(2);
    says(&run, "--token");
    let file = dir.path().join("token.txt");
    std::fs::write(&file, "abc\n").unwrap();
    let path = file.to_str().unwrap();
    let run = run_on(
        "listen",
        &db,
        &["--tcp", "127.0.0.1:0", "--token-file", path],
    )
    .failure(2);
    says(&run, &format!("in {path}"));
    let mut cmd = common::blazedb_command(None);
    cmd.env("BLAZEDB_TOKEN", "abc")
        .arg("listen")
        .arg(&db)
        .args(["--tcp", "127.0.0.1:0"]);
    let run = common::Run::of(cmd, None).failure(2);
    says(&run, "BLAZEDB_TOKEN");
    assert!(!db.exists());
}

/// TLS options with a peer that speaks no TLS are refused, not ignored.
#[test]
fn tls_options_need_a_tls_peer() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let run = run_on(
        "sync",
        &a,
        &[
            "tcp://127.0.0.1:1",
            "--once",
            "--danger-accept-invalid-certs",
        ],
    )
    .failure(2);
    assert!(run.stderr.contains("tls:// and wss://"), "{}", run.stderr);
    assert!(!a.exists());
    // With a second file: as much a command-line mistake (it exited 1).
    let b = dir.path().join("b.db");
    for option in [
        &["--tls-ca", "ca.pem"][..],
        &["--danger-accept-invalid-certs"],
    ] {
        let mut args = vec![b.to_str().unwrap(), "--once"];
        args.extend(option);
        let run = run_on("sync", &a, &args).failure(2);
        assert!(
            run.stderr
                .contains("TLS options apply to a network peer, and"),
            "{option:?}: {}",
            run.stderr
        );
        assert!(!a.exists() && !b.exists(), "{option:?}");
    }
}

/// A token in the sync URL would be printed in every error, `retrying` event and summary
/// that names the peer: refused (exit 2) as `user:password@` is, saying to use --token, and
/// without printing it; nothing is created.
#[test]
fn a_token_in_the_sync_url_is_refused_without_being_printed() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    for url in [
        "ws://127.0.0.1:1/v1/sync?token=S3CRET-TOKEN",
        "wss://relay.example/v1/sync?x=1&access_token=S3CRET-TOKEN",
        "tcp://me:S3CRET-TOKEN@127.0.0.1:1",
    ] {
        for mode in ["--once", "--watch"] {
            let run = run_on("sync", &a, &[url, mode]).failure(2);
            assert!(!run.stderr.contains("S3CRET"), "{url}: {}", run.stderr);
            assert!(run.stderr.contains("--token"), "{url}: {}", run.stderr);
            assert!(run.stdout.is_empty(), "{url}: {}", run.stdout);
            assert!(!a.exists(), "{url}");
        }
    }
    let run = run_on("sync", &a, &["ws://127.0.0.1:1/v1/sync?token=T", "--once"]).failure(2);
    assert!(
        run.stderr
            .contains("\"ws://127.0.0.1:1/v1/sync?token=***\"")
            && run
                .stderr
                .contains("give the token with --token (or BLAZEDB_TOKEN)"),
        "{}",
        run.stderr
    );
}

/// `--token` is for network peers: with two files it was silently ignored; now a usage
/// error. A BLAZEDB_TOKEN exported for network syncs does not stop a file sync.
#[test]
fn a_token_for_a_file_to_file_sync_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let mut cmd = common::blazedb_command(None);
    cmd.env_remove("BLAZEDB_TOKEN")
        .arg("sync")
        .args([&a, &b])
        .args(["--token", "abc", "--once"]);
    let run = common::Run::of(cmd, None).failure(2);
    assert!(
        run.stderr
            .contains("--token is presented to a network peer")
            && run.stderr.contains("leave --token out"),
        "{}",
        run.stderr
    );
    assert!(!a.exists() && !b.exists());
    let mut cmd = common::blazedb_command(None);
    cmd.env("BLAZEDB_TOKEN", "abc")
        .arg("sync")
        .args([&a, &b])
        .arg("--once");
    common::Run::of(cmd, None).success();
}

/// `unix://tmp/s.sock` read as the relative path tmp/s.sock (and was shown so, as
/// `unix://tmp/…`); whether /tmp/s.sock was meant cannot be told: refused with both forms.
#[test]
fn a_unix_url_with_a_host_part_is_refused_with_the_right_forms() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let run = run_on("sync", &a, &["unix://tmp/s.sock", "--once"]).failure(2);
    assert!(
        run.stderr
            .contains("write unix:///tmp/s.sock for the socket /tmp/s.sock, or unix:tmp/s.sock"),
        "{}",
        run.stderr
    );
    assert!(!a.exists());
}

/// TLS on `listen --unix` alone was "required arguments were not provided: --tcp": it says
/// instead that a Unix socket has no TLS.
#[test]
fn listen_says_a_unix_socket_has_no_tls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hub.db");
    let socket = dir.path().join("hub.sock");
    let run = run_on(
        "listen",
        &db,
        &[
            "--unix",
            socket.to_str().unwrap(),
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ],
    )
    .failure(2);
    assert!(
        run.stderr
            .starts_with("error: TLS is not available on a Unix socket")
            && run.stderr.contains("add --tcp ADDR"),
        "{}",
        run.stderr
    );
    assert!(!db.exists() && !socket.exists());
}

/// Input the database would refuse is refused before the file is opened: a bad field or
/// collection name, or a directory to import from, leave no new, empty database behind.
#[test]
fn refused_input_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("new.db");
    let run = run_on("put", &db, &["c", r#"{"$x": 1}"#]).failure(1);
    assert!(run.stderr.contains("invalid field name"), "{}", run.stderr);
    let run = run_on("put", &db, &["", r#"{"a": 1}"#]).failure(1);
    assert!(
        run.stderr.contains("invalid collection name"),
        "{}",
        run.stderr
    );
    let run = run_on("import", &db, &["c", dir.path().to_str().unwrap()]).failure(2);
    assert!(run.stderr.contains("is a directory"), "{}", run.stderr);
    assert!(!db.exists());
}

/// `get`'s output can go back to `update` as it is: its `"_id"` names the record being
/// updated, so it is dropped; another record's id is refused with what to do. An import line
/// whose `"_id"` is another system's id (not a UUID) says how to keep it.
#[test]
fn ids_inside_update_and_import_json_are_checked_and_explained() {
    let db = TestDb::new();
    let id = db.put("bugs", r#"{"title": "crash", "votes": 1}"#);
    let mut record = db.get("bugs", &id);
    record["title"] = "crash on start".into();
    db.run("update", &["bugs", &id, &record.to_string()])
        .success();
    let after = db.get("bugs", &id);
    assert_eq!(after["title"], "crash on start");
    assert_eq!(after["_id"], id.as_str(), "the id is not a field");
    assert_eq!(after.as_object().unwrap().len(), 3, "{after}");

    let other = db.put("bugs", "{}");
    let run = db
        .run(
            "update",
            &["bugs", &id, &format!(r#"{{"_id": "{other}", "votes": 9}}"#)],
        )
        .failure(2);
    assert!(
        run.stderr
            .contains(&format!("is {other}, not the record being updated ({id})"))
            && run.stderr.contains("leave \"_id\" out of an update"),
        "{}",
        run.stderr
    );
    assert_eq!(db.get("bugs", &id)["votes"], 1, "nothing was written");

    let run = db
        .run_with_stdin(
            "import",
            &["bugs", "-"],
            "{\"_id\": {\"$oid\": \"507f1f77bcf86cd799439011\"}, \"title\": \"x\"}\n",
        )
        .failure(1);
    assert!(
        run.stderr.contains("at line 1")
            && run.stderr.contains("_id must be a UUID")
            && run.stderr.contains("rename the key"),
        "{}",
        run.stderr
    );
}

/// An update operator that does not fit the field's kind says what the field holds and how to
/// change its kind, and changes nothing.
#[test]
fn an_operator_on_the_wrong_kind_of_field_says_how_to_change_its_kind() {
    let db = TestDb::new();
    let id = db.put("c", r#"{"n": 1, "s": "x"}"#);
    let run = db
        .run("update", &["c", &id, r#"{"n": {"$add": [2]}}"#])
        .failure(1);
    assert!(
        run.stderr.contains(
            "field \"n\" holds an int, and set add/remove needs a set (list): to change its kind, \
             write the field with a plain value of that kind first"
        ),
        "{}",
        run.stderr
    );
    let run = db
        .run("update", &["c", &id, r#"{"s": {"$inc": 1}}"#])
        .failure(1);
    assert!(
        run.stderr.contains("field \"s\" holds a text"),
        "{}",
        run.stderr
    );
    assert_eq!(db.get("c", &id)["n"], 1);
}

/// A password from `BLAZEDB_PASSWORD` that does not fit the file is named as coming from
/// there (an exported variable reaches every command of the shell); one from
/// `--password-file` is not.
#[test]
fn a_password_from_the_environment_that_does_not_fit_is_named() {
    let db = TestDb::new();
    db.put("bugs", "{}");
    let run = db
        .run_with_password(Some("s3cret"), "export", &["bugs"])
        .failure(1);
    assert!(
        run.stderr.contains("is not encrypted")
            && run
                .stderr
                .contains("the password came from BLAZEDB_PASSWORD: unset it"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);

    let enc = TestDb::encrypted("right");
    enc.put("bugs", "{}");
    let run = enc
        .run_with_password(Some("wrong"), "export", &["bugs"])
        .failure(1);
    assert!(
        run.stderr.contains("wrong password")
            && run.stderr.contains("still the old one after a rekey"),
        "{}",
        run.stderr
    );
    let file = enc.file("pw.txt");
    std::fs::write(&file, "wrong").unwrap();
    let run = enc
        .run_with_password(
            None,
            "export",
            &["bugs", "--password-file", file.to_str().unwrap()],
        )
        .failure(1);
    assert!(run.stderr.contains("wrong password"), "{}", run.stderr);
    assert!(!run.stderr.contains("BLAZEDB_PASSWORD"), "{}", run.stderr);
}

/// Library errors speak in the library's terms (an API call, a configuration field: it is
/// also used embedded, where there are no options); the CLI adds which option or command that
/// is here. A filter on an excluded field, `tcp://` to an HTTP server, a data directory that
/// is a file.
#[test]
fn library_errors_get_the_options_of_the_command_line_added() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let run = run_on(
        "sync",
        &a,
        &[
            b.to_str().unwrap(),
            "--once",
            "--where",
            "blob != null",
            "--exclude-fields",
            "blob",
        ],
    )
    .failure(2);
    assert!(
        run.stderr
            .contains("drop it from the policy's `exclude_fields` or from its `filter`")
            && run
                .stderr
                .contains("are --collections, --where and --exclude-fields)"),
        "{}",
        run.stderr
    );

    // An HTTP server that answers anything with a 400.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = http.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for conn in http.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let db = TestDb::new();
    db.put("bugs", "{}");
    let run = db
        .run("sync", &[&format!("tcp://{addr}"), "--once"])
        .failure(1);
    assert!(
        run.stderr
            .contains("the peer answered in HTTP, not in BlazeDB frames")
            && run
                .stderr
                .contains("(a peer's raw TCP listener, a relay's raw TCP port)")
            && run
                .stderr
                .contains("is `blazedb listen --tcp` or `blazedb serve --tcp-listen`)"),
        "{}",
        run.stderr
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let mut args: Vec<&std::ffi::OsStr> = ["serve", "--listen", "127.0.0.1:0", "--data"]
        .map(std::ffi::OsStr::new)
        .to_vec();
    args.push(file.as_os_str());
    let run = run_blazedb(None, &args).failure(1);
    assert!(
        run.stderr
            .contains("`RelayConfig::data_dir` must name a directory this user may write")
            && run.stderr.contains("(--data names the data directory)"),
        "{}",
        run.stderr
    );
}
