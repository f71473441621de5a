//! Selective sync through the in-process topology: a policy is one end's, never both. Given
//! to both ends (before 2026-12-06 `ConnectOptions::session.policy` was), the full copy
//! became a partial replica too and dropped its own records and fields outside the phone's
//! view: a record the phone closed was gone from every copy, with no tombstone, history or
//! conflict (found by an audit of the embedding API).

mod common;

use std::time::{Duration, Instant};

use blazedb::sync::{SessionConfig, SyncMode, SyncPolicy};
use blazedb::{Patch, Value};
use blazedb_net::{ConnectOptions, NetError, Topology};
use common::{open, CONVERGE};

fn open_bugs() -> SyncPolicy {
    SyncPolicy {
        filter: Some(r#"status == "open""#.into()),
        ..SyncPolicy::default()
    }
}

/// Wait until `done` holds (bounded by `CONVERGE`).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < CONVERGE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phones_filter_drops_a_closed_bug_on_the_phone_only() {
    let dir = tempfile::tempdir().unwrap();
    let (laptop, phone) = (open(dir.path(), "laptop"), open(dir.path(), "phone"));
    let id = laptop
        .insert(
            "bugs",
            [("status", Value::from("open")), ("title", Value::from("x"))],
        )
        .unwrap();
    let opts = ConnectOptions {
        second_policy: open_bugs(),
        ..ConnectOptions::default()
    };
    // Two rounds: the phone closes the bug in the first, the second reconnects.
    for round in 0..2 {
        let topo = Topology::new();
        let (nl, np) = (
            topo.register("laptop", laptop.clone()),
            topo.register("phone", phone.clone()),
        );
        topo.connect_with(nl, np, opts.clone()).unwrap();
        topo.wait_caught_up(CONVERGE).await.unwrap();
        if round == 0 {
            assert!(phone.get("bugs", id).unwrap().is_some(), "the phone has it");
            phone
                .update("bugs", id, Patch::new().set("status", "closed"))
                .unwrap();
            eventually("the phone lets the closed bug go", || {
                phone.get("bugs", id).unwrap().is_none()
            })
            .await;
        }
        topo.wait_caught_up(CONVERGE).await.unwrap();
        let kept = laptop
            .get("bugs", id)
            .unwrap()
            .expect("the laptop keeps it");
        assert_eq!(kept.fields["status"], Value::from("closed"));
        assert_eq!(kept.fields["title"], Value::from("x"));
        assert!(phone.get("bugs", id).unwrap().is_none());
        topo.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_excluding_a_field_leaves_it_on_the_full_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (laptop, phone) = (open(dir.path(), "laptop"), open(dir.path(), "phone"));
    let id = laptop
        .insert(
            "bugs",
            [
                ("title", Value::from("x")),
                ("attachment", Value::from("big")),
            ],
        )
        .unwrap();
    let topo = Topology::new();
    let (nl, np) = (
        topo.register("laptop", laptop.clone()),
        topo.register("phone", phone.clone()),
    );
    let opts = ConnectOptions {
        second_policy: SyncPolicy {
            exclude_fields: vec!["attachment".into()],
            ..SyncPolicy::default()
        },
        ..ConnectOptions::default()
    };
    topo.connect_with(nl, np, opts).unwrap();
    topo.wait_caught_up(CONVERGE).await.unwrap();
    let on_phone = phone.get("bugs", id).unwrap().expect("synced").fields;
    assert_eq!(on_phone.get("attachment"), None, "{on_phone:?}");
    let on_laptop = laptop.get("bugs", id).unwrap().unwrap().fields;
    assert_eq!(on_laptop["attachment"], Value::from("big"));
    topo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_for_both_ends_or_for_an_end_that_only_sends_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(dir.path(), "a"), open(dir.path(), "b"));
    let topo = Topology::new();
    let (na, nb) = (topo.register("a", a), topo.register("b", b));
    let refused = |opts: ConnectOptions, says: &str| match topo.connect_with(na, nb, opts) {
        Err(NetError::InvalidOptions(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected InvalidOptions, got {other:?}"),
    };
    refused(
        ConnectOptions {
            session: SessionConfig {
                policy: open_bugs(),
                ..SessionConfig::default()
            },
            ..ConnectOptions::default()
        },
        "second_policy",
    );
    refused(
        ConnectOptions {
            mode: SyncMode::Pull,
            second_policy: open_bugs(),
            ..ConnectOptions::default()
        },
        "first_policy",
    );
    refused(
        ConnectOptions {
            mode: SyncMode::Push,
            first_policy: open_bugs(),
            ..ConnectOptions::default()
        },
        "second_policy",
    );
    // Nothing was connected by the refused calls.
    assert!(topo.wait_caught_up(Duration::from_secs(1)).await.is_ok());
}
