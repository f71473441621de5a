//! Access rules over sync: a client receives only the records its read rule allows and
//! nothing of a closed collection; a forbidden write is rejected with a reason, never applied
//! to the relay's store or forwarded to other clients, and the writer's copy comes back to
//! the relay's version; an allowed write goes through to everyone who may read it; a delete
//! reaches only the clients that could read the record. What the relay sends back to undo
//! a refused write is counted as restated, not as forwarded.

mod common;

use std::time::Duration;

use blazedb::{Patch, Value};
use blazedb_relay::AuthConfig;
use common::{http, jwt_hs256, metric, now_s, open, wait_until, Client, TestRelay};
use serde_json::json;

const SECRET: &str = "rules-test-secret-0123456789";

const RULES: &str = r#"
[bugs]
read = "assignee == $auth.sub || public == true"
write = "reporter == $auth.sub"
"#;

fn token(sub: &str) -> String {
    jwt_hs256(SECRET, json!({"sub": sub, "exp": now_s() + 600}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_are_filtered_forbidden_writes_rejected_not_forwarded_and_reverted() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = TestRelay::write_rules(rules_dir.path(), RULES);
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.rules = Some(rules);
    })
    .await;
    let r = &relay.db;
    let bobs = r
        .insert(
            "bugs",
            [
                ("title", Value::from("assigned to bob")),
                ("assignee", "bob".into()),
                ("reporter", "carol".into()),
                ("public", false.into()),
            ],
        )
        .unwrap();
    let public = r
        .insert(
            "bugs",
            [
                ("title", Value::from("public, reported by alice")),
                ("assignee", "carol".into()),
                ("reporter", "alice".into()),
                ("public", true.into()),
            ],
        )
        .unwrap();
    let hidden = r
        .insert(
            "bugs",
            [
                ("title", Value::from("carol's private bug")),
                ("assignee", "carol".into()),
                ("reporter", "carol".into()),
                ("public", false.into()),
            ],
        )
        .unwrap();
    r.insert("admin", [("secret", "closed collection")])
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (alice_db, bob_db) = (open(dir.path(), "alice"), open(dir.path(), "bob"));
    let alice = Client::connect(&relay, alice_db.clone(), &token("alice")).await;
    let bob = Client::connect(&relay, bob_db.clone(), &token("bob")).await;
    alice.caught_up().await;
    bob.caught_up().await;

    // Read filtering: each sees what its read rule allows, nobody sees `admin`.
    assert!(bob_db.get("bugs", bobs).unwrap().is_some());
    assert!(bob_db.get("bugs", public).unwrap().is_some());
    assert!(bob_db.get("bugs", hidden).unwrap().is_none());
    assert!(alice_db.get("bugs", bobs).unwrap().is_none());
    assert!(alice_db.get("bugs", public).unwrap().is_some());
    assert!(alice_db.get("bugs", hidden).unwrap().is_none());
    assert_eq!(alice_db.count("admin").unwrap(), 0);
    assert_eq!(bob_db.count("admin").unwrap(), 0);

    // Bob edits alice's public bug (he is not its reporter): refused.
    bob_db
        .update("bugs", public, Patch::new().set("title", "defaced by bob"))
        .unwrap();
    // Bob also tries to take over carol's bug assigned to him by rewriting the reporter.
    bob_db
        .update("bugs", bobs, Patch::new().set("reporter", "bob"))
        .unwrap();
    // The relay keeps its version, bob's copies come back to it, alice never sees the edit.
    wait_until(Duration::from_secs(10), || {
        let t = bob_db.get("bugs", public).unwrap().unwrap();
        let b = bob_db.get("bugs", bobs).unwrap().unwrap();
        t.fields["title"] == Value::from("public, reported by alice")
            && b.fields["reporter"] == Value::from("carol")
    })
    .await;
    assert_eq!(
        r.get("bugs", public).unwrap().unwrap().fields["title"],
        Value::from("public, reported by alice")
    );
    assert_eq!(
        r.get("bugs", bobs).unwrap().unwrap().fields["reporter"],
        Value::from("carol")
    );
    alice.caught_up().await;
    assert_eq!(
        alice_db.get("bugs", public).unwrap().unwrap().fields["title"],
        Value::from("public, reported by alice")
    );

    // Bob may not write the closed collection either.
    let sneaky = bob_db.insert("admin", [("x", 1)]).unwrap();
    wait_until(Duration::from_secs(10), || {
        bob_db.get("admin", sneaky).unwrap().is_none()
    })
    .await;
    assert_eq!(r.count("admin").unwrap(), 1);
    // ... and what bob wrote there is not lost without a word: his copy went by EVICT (the
    // relay never shows him the closed collection), his value stays listed as a conflict.
    let kept: Vec<_> = bob_db
        .conflicts(Some("admin"))
        .unwrap()
        .into_iter()
        .filter(|c| c.record == sneaky)
        .map(|c| (c.cell, c.loser))
        .collect();
    assert!(
        kept.contains(&("x".to_owned(), Some(Value::Int(1)))),
        "{kept:?}"
    );

    // An allowed write (bob reports a public bug) reaches the relay and alice.
    let ok = bob_db
        .insert(
            "bugs",
            [
                ("title", Value::from("bob's public report")),
                ("reporter", "bob".into()),
                ("public", true.into()),
            ],
        )
        .unwrap();
    wait_until(Duration::from_secs(10), || {
        alice_db.get("bugs", ok).unwrap().is_some()
    })
    .await;
    assert!(r.get("bugs", ok).unwrap().is_some());

    // Deletes on the relay reach the clients that could read the record, and no one else
    // learns even the id: alice never could read bob's or carol's bug.
    r.delete("bugs", bobs).unwrap();
    r.delete("bugs", hidden).unwrap();
    let marker = r
        .insert(
            "bugs",
            [
                ("title", Value::from("after the deletes")),
                ("public", true.into()),
            ],
        )
        .unwrap();
    wait_until(Duration::from_secs(10), || {
        alice_db.get("bugs", marker).unwrap().is_some()
            && bob_db.get("bugs", marker).unwrap().is_some()
    })
    .await;
    assert!(
        bob_db.get("bugs", bobs).unwrap().is_none(),
        "bob's copy goes"
    );
    assert!(alice_db.record_state("bugs", bobs).unwrap().is_none());
    assert!(alice_db.record_state("bugs", hidden).unwrap().is_none());
    assert!(bob_db.record_state("bugs", hidden).unwrap().is_none());

    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert!(
        metric(&m, "blazedb_relay_rejected_writes_total").unwrap() >= 3.0,
        "{m}"
    );
    // Bob's session was told about each refused record (REJECT).
    let report = bob.finish().await.unwrap();
    assert!(report.stats.changes_rejected_by_peer >= 3, "{report:?}");
    alice.finish().await.unwrap();
    relay.stop().await;
}

/// The relay's version sent back to a writer whose write the rules refused is counted in
/// `cells_restated_total`, not in `cells_forwarded_total`: it was forwarded from nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_sent_back_is_restated_not_forwarded() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = TestRelay::write_rules(rules_dir.path(), RULES);
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.rules = Some(rules);
    })
    .await;
    let public = relay
        .db
        .insert(
            "bugs",
            [
                ("title", Value::from("public, reported by alice")),
                ("reporter", "alice".into()),
                ("public", true.into()),
            ],
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bob_db = open(dir.path(), "bob");
    let bob = Client::connect(&relay, bob_db.clone(), &token("bob")).await;
    bob.caught_up().await;
    let count = |m: &str, name: &str| metric(m, &format!("blazedb_relay_{name}_total")).unwrap();
    // The record bob was sent is counted as forwarded (once the relay has seen the
    // session's counters).
    let mut m = String::new();
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if count(&m, "cells_forwarded") > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let forwarded = count(&m, "cells_forwarded");
    assert!(forwarded > 0.0, "{m}");
    assert_eq!(count(&m, "cells_restated"), 0.0, "{m}");

    // Bob edits alice's bug: refused, and his copy comes back to the relay's version.
    bob_db
        .update("bugs", public, Patch::new().set("title", "defaced by bob"))
        .unwrap();
    wait_until(Duration::from_secs(10), || {
        bob_db.get("bugs", public).unwrap().unwrap().fields["title"]
            == Value::from("public, reported by alice")
    })
    .await;
    bob.caught_up().await;
    for _ in 0..100 {
        m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        if count(&m, "cells_restated") > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(count(&m, "cells_restated") > 0.0, "{m}");
    assert_eq!(count(&m, "cells_forwarded"), forwarded, "{m}");
    assert_eq!(count(&m, "rejected_writes"), 1.0, "{m}");
    bob.finish().await.unwrap();
    let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
    assert_eq!(count(&m, "cells_forwarded"), forwarded, "{m}");
    relay.stop().await;
}
