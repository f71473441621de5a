//! The rules file is read again when it changes, no restart: new rules are in force for
//! queries at once, and every sync session ends with `SHUTTING_DOWN` saying why, so that its
//! client — which reconnects by itself — syncs under them (what it may read can widen, and
//! it receives what became readable, or narrow, and it lets go of what it may no longer
//! read). A file that does not load changes nothing; one touched but unchanged ends no
//! session.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use blazedb_net::{sync_watch, ClientEvent, ClientOptions, Endpoint};
use common::{ids, open, query, TestRelay, TOKEN};
use serde_json::json;

const BOTH_OPEN: &str = r#"
[notes]
read = "true"
write = "true"

[secrets]
read = "true"
write = "true"
"#;

const SECRETS_CLOSED: &str = r#"
[notes]
read = "true"
write = "true"
"#;

/// Write the rules as a deployment does: a new file renamed over the old.
fn publish(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rules_are_in_force_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    publish(&rules, BOTH_OPEN);
    let relay = TestRelay::start(|c| c.rules = Some(rules.clone())).await;
    relay.db.insert("notes", [("text", "n1")]).unwrap();
    relay.db.insert("secrets", [("text", "s1")]).unwrap();

    // A client syncing all along, reconnecting by itself.
    let db = open(dir.path(), "client");
    let url: Endpoint = relay.ws_url().parse().unwrap();
    let options = ClientOptions {
        session: blazedb::sync::SessionConfig {
            token: TOKEN.into(),
            ..Default::default()
        },
        ..ClientOptions::default()
    };
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let watching = tokio::spawn({
        let (db, events, stop) = (db.clone(), events.clone(), stop.clone());
        async move {
            sync_watch(db, &url, &options, stop.cancelled_owned(), |e| {
                if let ClientEvent::SessionEnded { report, error } = e {
                    events
                        .lock()
                        .unwrap()
                        .push(format!("{error:?} {:?}", report.peer_goodbye));
                }
            })
            .await
        }
    });
    until("both collections synced", || {
        db.count("notes").unwrap_or(0) == 1 && db.count("secrets").unwrap_or(0) == 1
    })
    .await;

    // Touched, not changed: nothing happens.
    let text = std::fs::read_to_string(&rules).unwrap();
    publish(&rules, &text);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(
        events.lock().unwrap().is_empty(),
        "{:?}",
        events.lock().unwrap()
    );

    // `secrets` closed: queries see it at once the file is read; the session ends saying
    // why, the client reconnects under the new rules and receives no more secrets.
    publish(&rules, SECRETS_CLOSED);
    until("the session ended for the new rules", || {
        !events.lock().unwrap().is_empty()
    })
    .await;
    let ended = events.lock().unwrap()[0].clone();
    assert!(ended.contains("access rules changed"), "{ended}");
    let r = query(relay.addr, TOKEN, json!({"collection": "secrets"})).await;
    assert_eq!(r.status, 200);
    assert!(ids(&r).is_empty(), "a closed collection answers nothing");
    relay.db.insert("secrets", [("text", "s2")]).unwrap();
    relay.db.insert("notes", [("text", "n2")]).unwrap();
    until("the reconnected client syncs notes", || {
        db.count("notes").unwrap_or(0) == 2
    })
    .await;
    // Served under a narrower view, the client let go of what it may no longer read, as
    // after a restart of the relay with these rules.
    until("the closed collection left the client", || {
        db.count("secrets").unwrap_or(0) == 0
    })
    .await;

    // Rules that do not load change nothing: notes still flow, the session goes on.
    let before = events.lock().unwrap().len();
    publish(
        &rules,
        "[notes]\nread = \"this is not == an expression (\"\n",
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    relay.db.insert("notes", [("text", "n3")]).unwrap();
    until("notes still flow", || db.count("notes").unwrap_or(0) == 3).await;
    assert_eq!(events.lock().unwrap().len(), before, "no session ended");
    let r = query(relay.addr, TOKEN, json!({"collection": "notes"})).await;
    assert_eq!(ids(&r).len(), 3);

    // Opened again: what became readable arrives.
    publish(&rules, BOTH_OPEN);
    until("the secret made while closed arrives", || {
        db.count("secrets").unwrap_or(0) == 2
    })
    .await;
    stop.cancel();
    watching.await.unwrap().unwrap();
    relay.stop().await;
}
