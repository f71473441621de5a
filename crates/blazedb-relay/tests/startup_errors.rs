//! Configuration mistakes stop the relay before it accepts anything, with a message that says
//! where the problem is: an invalid rule (file, collection, key, column), running without
//! authentication on a non-loopback address, a missing TLS key, a wrong store password.

use std::path::PathBuf;

use blazedb_relay::{Relay, RelayConfig, RelayError, TlsFiles};

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

    let e = error(RelayConfig {
        tls: Some(TlsFiles {
            cert: PathBuf::from("/nonexistent/cert.pem"),
            key: PathBuf::from("/nonexistent/key.pem"),
            client_ca: None,
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
    assert!(
        e.contains("relay.db") && e.to_lowercase().contains("password"),
        "{e}"
    );
}
