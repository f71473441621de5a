//! A listener advertised over mDNS in this process is found by a browse with its node id,
//! port and URL, and is gone from the next browse once its advertisement is dropped.
//!
//! Multicast stays on this machine: the test re-runs itself inside a private network
//! namespace holding only `lo` where the machine allows one (root, `unshare`, `ip`), and in
//! any case tells mDNS to use the loopback interface and a port of its own.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use blazedb::NodeId;
use blazedb_net::discovery::{
    advertise_listener_with, advertise_with, browse_with, listener_name, DiscoveredPeer,
    DiscoveryError, DiscoveryOptions,
};

/// Set in the copy of the test that runs inside the private namespace.
const IN_NETNS: &str = "BLAZEDB_TEST_IN_NETNS";

/// Long enough for a fresh responder's probing (~750 ms) and delayed answers, several times.
const BROWSE: Duration = Duration::from_millis(2_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_listener_is_found_then_withdrawn() {
    if !run_here_or_in_private_netns("advertised_listener_is_found_then_withdrawn") {
        return;
    }
    // A port of its own: no system responder and no other test process answers here.
    let opts = DiscoveryOptions::loopback(20_000 + (std::process::id() % 20_000) as u16);
    let (listener_node, other_node) = (NodeId::random(), NodeId::random());
    let listener_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7421);
    let listener = advertise_listener_with(&opts, listener_node, listener_addr, false).unwrap();
    let other = advertise_with(
        &opts,
        "kitchen tablet",
        Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        7422,
        other_node,
        &[("proto", "tls"), ("room", "kitchen")],
    )
    .unwrap();

    let peers = match browse_with(&opts, BROWSE).await {
        Err(DiscoveryError::NoUsableInterface { selection }) => {
            // The one case where this test cannot say anything: the mDNS daemon itself
            // reports that no interface of the selection can carry multicast.
            println!("skipped: the mDNS daemon reports no usable interface ({selection})");
            return;
        }
        r => r.unwrap(),
    };
    assert_eq!(peers.len(), 2, "{peers:#?}");
    let found = find(&peers, &listener_name(listener_node));
    assert_eq!(found.node_id, listener_node);
    assert_eq!(found.port, 7421);
    assert_eq!(found.url, "tcp://127.0.0.1:7421");
    assert_eq!(found.addresses, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    assert_eq!(found.txt["proto"], "tcp");
    assert_eq!(
        found.txt["v"],
        blazedb::limits::PROTOCOL_VERSION.to_string()
    );
    let tablet = find(&peers, "kitchen tablet");
    assert_eq!(tablet.node_id, other_node);
    assert_eq!(tablet.url, "tls://127.0.0.1:7422");
    assert_eq!(tablet.txt["room"], "kitchen");
    let line = tablet.to_json();
    assert_eq!(line["node_id"], other_node.to_string());
    assert_eq!(line["addresses"][0], "127.0.0.1");

    // Dropping withdraws: a later browse finds only the advertisement still held.
    drop(other);
    let peers = browse_with(&opts, BROWSE).await.unwrap();
    let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec![listener_name(listener_node)], "{peers:#?}");
    listener.withdraw().await.unwrap();
}

fn find<'a>(peers: &'a [DiscoveredPeer], name: &str) -> &'a DiscoveredPeer {
    peers
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name:?} not found in {peers:#?}"))
}

/// Where a private network namespace can be made, run the test `name` again in one (only an
/// up `lo` inside) and return false: the caller is done. Otherwise return true: run here.
fn run_here_or_in_private_netns(name: &str) -> bool {
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    let probe = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", "ip link set lo up"])
        .output();
    if !matches!(&probe, Ok(out) if out.status.success()) {
        println!("no private network namespace here (needs root, unshare and ip): using lo");
        return true;
    }
    let out = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("--- in a private network namespace ---\n{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the test failed in the namespace");
    assert!(
        stdout.contains("1 passed"),
        "the test did not run in the namespace"
    );
    false
}
