//! Selective sync through the real relay: a client's policy (collections, a filter over its
//! own claims, excluded fields) on top of the relay's read rules; records move in whole and
//! move out as evictions when the relay's data changes and when the client changes its policy
//! on the live connection; another user may not reuse the file's node id; an eviction never
//! deletes anything at the relay.

mod common;

use std::sync::Arc;
use std::time::Duration;

use blazedb::sync::{SessionConfig, SyncPolicy};
use blazedb::{Database, Patch, RecordId, Value};
use blazedb_net::ws::WsStream;
use blazedb_net::{run_session, DriverOptions, NetError, SessionReport};
use blazedb_relay::AuthConfig;
use common::{
    auth_failures, connect_ws, http, jwt_hs256, metric_sum, now_s, open, wait_until, TestRelay,
};
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "selective-test-secret-0123456789";

const RULES: &str = r#"
[bugs]
read = "assignee == $auth.sub || public == true"
write = "true"

[notes]
read = "true"
write = "true"
"#;

fn token(sub: &str) -> String {
    jwt_hs256(SECRET, json!({"sub": sub, "exp": now_s() + 600}))
}

struct PartialClient {
    stop: CancellationToken,
    policy: watch::Sender<SyncPolicy>,
    task: JoinHandle<Result<SessionReport, NetError>>,
}

async fn connect(
    relay: &TestRelay,
    db: &Arc<Database>,
    sub: &str,
    policy: SyncPolicy,
) -> PartialClient {
    let ws = connect_ws(relay.addr, Some(&token(sub)))
        .await
        .expect("connects");
    let stop = CancellationToken::new();
    let (tx, rx) = watch::channel(policy.clone());
    let opts = DriverOptions {
        shutdown: stop.clone(),
        policy: Some(rx),
        ..DriverOptions::default()
    };
    let cfg = SessionConfig {
        policy,
        ..SessionConfig::default()
    };
    let task = tokio::spawn(run_session(db.clone(), WsStream::new(ws), cfg, opts));
    PartialClient {
        stop,
        policy: tx,
        task,
    }
}

impl PartialClient {
    async fn finish(self) -> SessionReport {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("ends in time")
            .unwrap()
            .expect("clean end")
    }
}

fn bug(db: &Database, title: &str, assignee: &str, public: bool, priority: i64) -> RecordId {
    db.insert(
        "bugs",
        [
            ("title", Value::from(title)),
            ("assignee", assignee.into()),
            ("public", public.into()),
            ("priority", Value::Int(priority)),
            ("log", Value::Bytes(vec![1; 64])),
        ],
    )
    .unwrap()
}

fn titles(db: &Database) -> Vec<String> {
    let mut t: Vec<String> = db
        .scan("bugs")
        .unwrap()
        .into_iter()
        .map(|r| match &r.fields["title"] {
            Value::Text(s) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    t.sort();
    t
}

async fn until(cond: impl FnMut() -> bool) {
    wait_until(Duration::from_secs(10), cond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn views_follow_data_policy_and_claims_and_evictions_delete_nothing() {
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = TestRelay::write_rules(rules_dir.path(), RULES);
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtSecret(SECRET.into());
        c.rules = Some(rules);
    })
    .await;
    let r = &relay.db;
    let a_hi = bug(r, "alice high", "alice", false, 3);
    let _a_lo = bug(r, "alice low", "alice", false, 1);
    let pub_hi = bug(r, "public high", "carol", true, 5);
    let carol = bug(r, "carol private", "carol", false, 5);
    r.insert("notes", [("text", "a note")]).unwrap();

    // Alice asks for bugs of priority ≥ 2, without the log; the rules add "assigned to her
    // or public".
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "alice");
    let policy = SyncPolicy {
        collections: Some(vec!["bugs".into()]),
        filter: Some("priority >= 2".into()),
        exclude_fields: vec!["log".into()],
    };
    let c = connect(&relay, &db, "alice", policy.clone()).await;
    until(|| titles(&db) == ["alice high", "public high"]).await;
    assert_eq!(db.count("notes").unwrap(), 0);
    assert!(db
        .scan("bugs")
        .unwrap()
        .iter()
        .all(|b| !b.fields.contains_key("log")));

    // The relay reassigns alice's bug to carol (move-out) and carol's to alice (move-in: the
    // whole record arrives although only `assignee` changed).
    r.update("bugs", a_hi, Patch::new().set("assignee", "carol"))
        .unwrap();
    r.update("bugs", carol, Patch::new().set("assignee", "alice"))
        .unwrap();
    until(|| titles(&db) == ["carol private", "public high"]).await;
    let moved_in = db.get("bugs", carol).unwrap().unwrap();
    assert_eq!(moved_in.fields["priority"], Value::Int(5));
    assert!(!moved_in.fields.contains_key("log"));

    // Alice edits a record in her view: it reaches the relay as usual.
    db.update("bugs", pub_hi, Patch::new().set("status", "triaged"))
        .unwrap();
    until(|| {
        r.get("bugs", pub_hi).unwrap().unwrap().fields.get("status")
            == Some(&Value::from("triaged"))
    })
    .await;

    // Live policy change on the same connection: every priority, with the log.
    c.policy
        .send(SyncPolicy {
            collections: Some(vec!["bugs".into()]),
            filter: None,
            exclude_fields: vec![],
        })
        .unwrap();
    until(|| titles(&db) == ["alice low", "carol private", "public high"]).await;
    until(|| {
        db.get("bugs", carol)
            .unwrap()
            .is_some_and(|b| b.fields.contains_key("log"))
    })
    .await;
    let report = c.finish().await;
    assert!(report.stats.snapshots_applied >= 2, "{:?}", report.stats);
    assert!(report.stats.evicted >= 1, "{:?}", report.stats);

    // Another user on the same file is refused: its node id belongs to alice (one user
    // must not act as another's node, its cursors and unsent writes). Alice's file is
    // untouched.
    let c = connect(&relay, &db, "dave", SyncPolicy::default()).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), c.task)
        .await
        .expect("ends in time")
        .unwrap();
    let e = ended.expect_err("refused").to_string();
    assert!(e.contains("another user"), "{e}");
    // So is a token whose `sub` is a number, or missing: they are identities too (they
    // skipped the check, and could act as alice's node).
    for claims in [
        json!({"sub": 7, "exp": now_s() + 600}),
        json!({"exp": now_s() + 600}),
    ] {
        let ws = connect_ws(relay.addr, Some(&jwt_hs256(SECRET, claims.clone())))
            .await
            .expect("connects");
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            run_session(
                db.clone(),
                WsStream::new(ws),
                SessionConfig::default(),
                DriverOptions::default(),
            ),
        )
        .await
        .expect("ends in time");
        let e = ended.expect_err("refused").to_string();
        assert!(e.contains("another user"), "{claims}: {e}");
    }
    assert_eq!(titles(&db), ["alice low", "carol private", "public high"]);
    // Each of the three refusals is an authentication failure in the metrics, of a node id
    // bound to another identity (the session refuses these itself; they were not counted).
    // The relay counts a session's close just after the client saw the refusal.
    let failures = || async {
        let m = http(relay.addr, "GET", "/metrics", &[], "").await.body;
        assert_eq!(
            metric_sum(&m, "blazedb_relay_auth_failures_total"),
            auth_failures(&m, "node_owner"),
            "{m}"
        );
        auth_failures(&m, "node_owner")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while failures().await != Some(3.0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failures().await, Some(3.0));
    // Dave on a file of his own: the view follows his claims.
    let dave = open(dir.path(), "dave");
    let c = connect(&relay, &dave, "dave", SyncPolicy::default()).await;
    until(|| titles(&dave) == ["public high"] && dave.count("notes").unwrap() == 1).await;
    c.finish().await;

    // Nothing was deleted at the relay by any of these evictions.
    assert_eq!(r.count("bugs").unwrap(), 4);
    for id in [a_hi, carol, pub_hi] {
        assert!(r.get("bugs", id).unwrap().is_some());
    }
    relay.stop().await;
}

/// A client away past the relay's retention (here: forgotten, as `blazedb peers --forget`
/// does) comes back after GC collected the tombstones it needed: it is re-bootstrapped with a
/// replacing snapshot and ends with exactly the relay's data, deletes included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_back_from_beyond_gc_converges_through_a_snapshot() {
    use blazedb::GcOptions;
    let relay = TestRelay::start(|c| c.auth = AuthConfig::None).await;
    let r = &relay.db;
    let ids: Vec<RecordId> = (0..20)
        .map(|i| r.insert("notes", [("n", Value::Int(i))]).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), "away");
    let c = connect(&relay, &db, "away", SyncPolicy::default()).await;
    until(|| db.count("notes").unwrap() == 20).await;
    c.finish().await;

    // While it is away: deletes, an update, and GC that forgets it and purges tombstones.
    for id in &ids[..5] {
        r.delete("notes", *id).unwrap();
    }
    r.update("notes", ids[10], Patch::new().set("n", 1000))
        .unwrap();
    assert!(r.forget_peer(db.node_id()).unwrap());
    let report = r.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.tombstones_purged, 5, "{report:?}");

    let c = connect(&relay, &db, "away", SyncPolicy::default()).await;
    until(|| {
        db.count("notes").unwrap() == 15
            && db.get("notes", ids[10]).unwrap().unwrap().fields["n"] == Value::Int(1000)
    })
    .await;
    let report = c.finish().await;
    assert_eq!(report.stats.snapshots_applied, 1, "{:?}", report.stats);
    for id in &ids[..5] {
        assert!(db.get("notes", *id).unwrap().is_none());
    }
    relay.stop().await;
}
