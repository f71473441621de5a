//! Configuration mistakes stop the relay before it accepts anything, with a message that says
//! where the problem is: an invalid rule (file, collection, key, column), running without
//! authentication on a non-loopback address, a static token or JWT secret shorter than 16
//! bytes, limits that cannot work (no connection slot, a
//! ping interval too short, an idle timeout not longer than it, an authentication failure
//! window of 0 ms), a missing TLS key, a wrong
//! store password, a `--unix` path that is not a socket.

use std::path::PathBuf;

use blazedb_relay::{AuthConfig, Limits, Relay, RelayConfig, RelayError, TlsFiles};

fn config(dir: &tempfile::TempDir) -> RelayConfig {
    RelayConfig {
        data_dir: dir.path().join("data"),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..RelayConfig::default()
    }
}

async fn error(c: RelayConfig) -> String {
    Relay::bind(c).await.expect_err("refused").to_string()
}

#[tokio::test]
async fn configuration_errors_are_reported_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[bugs]\nread = \"public == true\"\nwrite = \"reporter == $auth.sub &&\"\n",
    )
    .unwrap();
    let e = error(RelayConfig {
        rules: Some(rules.clone()),
        ..config(&dir)
    })
    .await;
    assert!(
        e.starts_with(&format!(
            "rules file {}: [bugs] write: invalid expression at column 25",
            rules.display()
        )),
        "{e}"
    );

    let e = error(RelayConfig {
        rules: Some(dir.path().join("missing.toml")),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("missing.toml") && e.contains("cannot read"),
        "{e}"
    );

    let e = error(RelayConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("no authentication") && e.contains("--danger-allow-anonymous"),
        "{e}"
    );

    let mut limits = Limits {
        connections_max: 0,
        ..Limits::default()
    };
    let e = error(RelayConfig {
        limits: limits.clone(),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("--max-connections 0 would refuse every connection"),
        "{e}"
    );
    limits.connections_max = 10;
    limits.ping_interval_ms = 0;
    let e = error(RelayConfig {
        limits: limits.clone(),
        ..config(&dir)
    })
    .await;
    assert!(e.contains("ping interval of 0 ms is too short"), "{e}");
    limits.ping_interval_ms = 1_000;
    limits.idle_timeout_ms = 1_000;
    let e = error(RelayConfig {
        limits: limits.clone(),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("idle timeout of 1000 ms must be longer than the ping interval"),
        "{e}"
    );
    assert!(!e.contains("  "), "{e}");
    limits.idle_timeout_ms = 10_000;
    limits.auth_failure_window_ms = 0;
    let e = error(RelayConfig {
        limits,
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("authentication failure window of 0 ms is out of range")
            && e.contains("--max-auth-failures-per-address 0"),
        "{e}"
    );

    let e = error(RelayConfig {
        tls: Some(TlsFiles {
            cert: PathBuf::from("/nonexistent/cert.pem"),
            key: PathBuf::from("/nonexistent/key.pem"),
            client_ca: None,
            client_crls: Vec::new(),
        }),
        ..config(&dir)
    })
    .await;
    assert!(
        e.starts_with("TLS:") && e.contains("/nonexistent/cert.pem"),
        "{e}"
    );

    // An encrypted store opened with another password.
    let relay = Relay::bind(RelayConfig {
        password: Some("first".into()),
        ..config(&dir)
    })
    .await
    .unwrap();
    drop(relay);
    let r = Relay::bind(RelayConfig {
        password: Some("second".into()),
        ..config(&dir)
    })
    .await;
    assert!(matches!(r, Err(RelayError::Store { .. })), "{r:?}");
    let e = r.unwrap_err().to_string();
    // The store's path once (until 2026-12-07: "cannot open the relay store P: wrong
    // password for P: ...").
    let store = dir.path().join("data").join("relay.db");
    assert_eq!(
        e,
        format!(
            "cannot open the relay store: wrong password for {}: the file is encrypted with a \
             different password (or, if the password is right, its first page is damaged: \
             restore it from a backup or a peer)",
            store.display()
        )
    );
}

/// Mixed-up key files, an empty token and a port in use each stop the relay with what to do
/// about it: a JWT *private* key given as the public one (jsonwebtoken would read it, and the
/// relay would then refuse every token as "not issued for this relay"), the TLS certificate
/// and key swapped, and an address another process listens on.
#[tokio::test]
async fn mixed_up_key_files_an_empty_or_short_token_and_a_busy_port_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let private = fixtures.join("jwt_rsa_private.pem");
    let e = error(RelayConfig {
        auth: AuthConfig::JwtPublicKey(private.clone()),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains(&format!("{} holds a private key", private.display())) && e.contains("-pubout"),
        "{e}"
    );

    let e = error(RelayConfig {
        auth: AuthConfig::Token("".into()),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("the token is empty (is the variable meant to hold it set?)"),
        "{e}"
    );

    // A short static token is as guessable as a short JWT secret, and nothing slows down a
    // client that guesses: both need 16 bytes, and the message says how to make them.
    for short in ["abc", "fifteen-bytes!!"] {
        let e = error(RelayConfig {
            auth: AuthConfig::Token(short.into()),
            ..config(&dir)
        })
        .await;
        assert!(
            e.contains(&format!("the token is {} bytes long", short.len()))
                && e.contains("at least 16")
                && e.contains("openssl rand -hex 32")
                && e.contains("--token-file"),
            "{e}"
        );
    }
    let e = error(RelayConfig {
        auth: AuthConfig::JwtSecret("fifteen-bytes!!".into()),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("shorter than 16 bytes") && e.contains("openssl rand -hex 32"),
        "{e}"
    );
    let sixteen = Relay::bind(RelayConfig {
        auth: AuthConfig::Token("sixteen-bytes!!!".into()),
        ..config(&dir)
    })
    .await;
    assert!(sixteen.is_ok(), "{:?}", sixteen.err());
    drop(sixteen);

    let e = error(RelayConfig {
        tls: Some(TlsFiles {
            cert: fixtures.join("tls_key.pem"),
            key: fixtures.join("tls_cert.pem"),
            client_ca: None,
            client_crls: Vec::new(),
        }),
        ..config(&dir)
    })
    .await;
    assert!(
        e.starts_with("TLS: ")
            && !e.contains("TLS setup")
            && e.contains("tls_key.pem: no CERTIFICATE block in the file")
            && e.contains("not its key"),
        "{e}"
    );
    let e = error(RelayConfig {
        tls: Some(TlsFiles {
            cert: fixtures.join("tls_cert.pem"),
            key: fixtures.join("tls_cert.pem"),
            client_ca: None,
            client_crls: Vec::new(),
        }),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("no usable PEM private key") && e.contains("not the certificate"),
        "{e}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let e = error(RelayConfig {
        data_dir: file,
        ..config(&dir)
    })
    .await;
    // In the library's terms: an embedded relay has no `--data` (the CLI adds it).
    assert!(
        e.contains("a-file")
            && e.contains("`RelayConfig::data_dir` must name a directory this user may write")
            && !e.contains("--data"),
        "{e}"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let e = error(RelayConfig {
        listen: busy.local_addr().unwrap(),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains(&format!("cannot listen on {}", busy.local_addr().unwrap()))
            && e.contains("another process (another relay?) listens there"),
        "{e}"
    );
}

/// Settings that work but cannot be what was meant: `--jwt-audience` without JWTs is refused;
/// rules reading `$auth` on a relay without credentials (every claim unknown: they match
/// nothing) and a store collection no rule table names (closed to everyone: here a misspelt
/// `[bug]`) start with a warning each.
#[tokio::test]
async fn settings_that_cannot_be_what_was_meant_are_refused_or_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let e = error(RelayConfig {
        auth: AuthConfig::Token("a-token-for-the-tests".into()),
        jwt_audience: Some("my-app".into()),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains("--jwt-audience and --jwt-issuer check JWTs"),
        "{e}"
    );

    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[bug]\nread = \"assignee == $auth.sub\"\nwrite = true\n[notes]\nread = true\n",
    )
    .unwrap();
    let relay = Relay::bind(config(&dir)).await.unwrap();
    assert!(relay.warnings().is_empty(), "{:?}", relay.warnings());
    drop(relay);
    {
        let store = blazedb::Database::open(
            dir.path().join("data/relay.db"),
            blazedb::OpenOptions::default(),
        )
        .unwrap();
        store.insert("bugs", [("title", "crash")]).unwrap();
        store.insert("notes", [("text", "hi")]).unwrap();
    }
    let relay = Relay::bind(RelayConfig {
        rules: Some(rules.clone()),
        ..config(&dir)
    })
    .await
    .unwrap();
    let w = relay.warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].starts_with("[bug] read use $auth, but this relay requires no credentials"),
        "{w:?}"
    );
    assert!(
        w[1].contains("collections bugs have no table in the rules file")
            && w[1].contains("its tables: bug, notes"),
        "{w:?}"
    );
    drop(relay);
    let relay = Relay::bind(RelayConfig {
        rules: Some(rules),
        auth: AuthConfig::Token("a-token-for-the-tests".into()),
        ..config(&dir)
    })
    .await
    .unwrap();
    assert_eq!(relay.warnings().len(), 1, "{:?}", relay.warnings());
}

/// `--unix` naming a file that is not a socket (here: the relay's own store) is refused and
/// the file is left alone; a socket file left by a dead relay is still replaced.
#[tokio::test]
async fn unix_path_that_is_not_a_socket_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::bind(config(&dir)).await.unwrap();
    let store = relay.database();
    store.insert("notes", [("keep", "me")]).unwrap();
    let store_path = store.path().to_owned();
    drop(relay);
    let before = std::fs::read(&store_path).unwrap();

    let e = error(RelayConfig {
        unix: Some(store_path.clone()),
        ..config(&dir)
    })
    .await;
    assert!(
        e.contains(&format!(
            "{} exists and is not a socket: choose another path",
            store_path.display()
        )),
        "{e}"
    );
    assert_eq!(
        std::fs::read(&store_path).unwrap(),
        before,
        "the store is untouched"
    );
    drop(store);

    // A socket nobody listens on, as a killed relay leaves behind.
    let stale = dir.path().join("relay.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let relay = Relay::bind(RelayConfig {
        unix: Some(stale.clone()),
        ..config(&dir)
    })
    .await
    .expect("a stale socket is replaced");
    drop(relay);
}
