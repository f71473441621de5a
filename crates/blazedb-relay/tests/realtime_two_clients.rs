//! Two WebSocket clients — each a local database running a session over the WebSocket
//! adapter — sync through the relay in real time: every write on one appears on the other
//! while both stay connected, in both directions, and the relay's own store holds it all
//! (`POST /v1/query` sees it).

mod common;

use std::time::{Duration, Instant};

use blazedb::{Patch, Value};
use common::{ids, open, query, wait_until, Client, TestRelay, TOKEN};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_reach_the_other_client_and_the_relay_store() {
    let relay = TestRelay::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let first = a
        .insert("notes", [("text", "written before connecting")])
        .unwrap();

    let ca = Client::connect(&relay, a.clone(), TOKEN).await;
    let cb = Client::connect(&relay, b.clone(), TOKEN).await;
    wait_until(Duration::from_secs(10), || {
        b.get("notes", first).unwrap().is_some()
    })
    .await;

    // Real time: each write reaches the other client with both sessions still running.
    let mut slowest = Duration::ZERO;
    let mut written = vec![first];
    for i in 0..20 {
        let t = Instant::now();
        let id = a
            .insert("notes", [("text", format!("from a #{i}"))])
            .unwrap();
        wait_until(Duration::from_secs(5), || {
            b.get("notes", id).unwrap().is_some()
        })
        .await;
        slowest = slowest.max(t.elapsed());
        written.push(id);
    }
    b.update("notes", first, Patch::new().set("text", "edited on b"))
        .unwrap();
    wait_until(Duration::from_secs(5), || {
        a.get("notes", first).unwrap().unwrap().fields["text"] == Value::from("edited on b")
    })
    .await;
    assert!(
        !ca.task.is_finished() && !cb.task.is_finished(),
        "still connected"
    );
    eprintln!("slowest A → relay → B delivery: {slowest:?}");

    // The relay applied everything to its own store.
    let r = query(relay.addr, TOKEN, json!({"collection": "notes"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut expected: Vec<String> = written.iter().map(|id| id.to_string()).collect();
    expected.sort();
    assert_eq!(ids(&r), expected);
    let r = query(
        relay.addr,
        TOKEN,
        json!({"collection": "notes", "where": "text == \"edited on b\""}),
    )
    .await;
    assert_eq!(ids(&r), vec![first.to_string()]);
    assert_eq!(relay.db.count("notes").unwrap(), 21);

    ca.caught_up().await;
    cb.caught_up().await;
    ca.finish().await.unwrap();
    cb.finish().await.unwrap();
    relay.stop().await;
}
