//! `blazedb discover` prints one JSON line per BlazeDB peer announced over mDNS (here a
//! listener advertised by this test process, on loopback), with a URL `blazedb sync` takes.
//!
//! Multicast stays on this machine: the test re-runs itself inside a private network
//! namespace holding only `lo` where the machine allows one (root, `unshare`, `ip`), and
//! in any case restricts mDNS to `lo` and a port of its own.

use std::net::SocketAddr;
use std::process::Command;

use blazedb::NodeId;
use blazedb_net::discovery::{advertise_listener_with, DiscoveryOptions};
use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_blazedb");

/// Set in the copy of the test that runs inside the private namespace.
const IN_NETNS: &str = "BLAZEDB_TEST_IN_NETNS";

#[test]
fn discover_prints_an_advertised_listener() {
    if !run_here_or_in_private_netns("discover_prints_an_advertised_listener") {
        return;
    }
    let mdns_port = 20_000 + (std::process::id() % 20_000) as u16;
    let node = NodeId::random();
    let addr: SocketAddr = "127.0.0.1:7423".parse().unwrap();
    let _ad =
        advertise_listener_with(&DiscoveryOptions::loopback(mdns_port), node, addr, true).unwrap();

    let out = Command::new(BIN)
        .args(["discover", "--timeout-ms", "2500", "--interface", "lo"])
        .args(["--mdns-port", &mdns_port.to_string()])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    if !out.status.success() && stderr.contains("no usable network interface") {
        // The one case where this test cannot say anything: the mDNS daemon itself reports
        // that `lo` cannot carry multicast.
        println!("skipped: {stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<Json> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let peer = &lines[0];
    assert_eq!(peer["node_id"], node.to_string());
    assert_eq!(peer["name"], format!("blazedb-{node}"));
    assert_eq!(peer["url"], "tls://127.0.0.1:7423");
    assert_eq!(peer["port"], 7423);
    assert_eq!(peer["addresses"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(peer["txt"]["proto"], "tls");
}

#[test]
fn listen_advertise_is_found_by_discover() {
    if !run_here_or_in_private_netns("listen_advertise_is_found_by_discover") {
        return;
    }
    if std::env::var_os(IN_NETNS).is_none() {
        // `listen --advertise` announces on every interface on the standard port: only do
        // that inside a private namespace.
        println!("skipped: no private network namespace");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let mut listener = Command::new(BIN)
        .args([
            "listen",
            db.to_str().unwrap(),
            "--tcp",
            "127.0.0.1:0",
            "--advertise",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(listener.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = serde_json::from_str::<Json>(&line).unwrap()["listening"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = Command::new(BIN)
        .args(["discover", "--timeout-ms", "2500", "--interface", "lo"])
        .output()
        .unwrap();
    let _ = listener.kill();
    let _ = listener.wait();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let urls: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Json>(l).unwrap()["url"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(urls, vec![url], "{stdout}");
}

#[test]
fn discover_rejects_a_zero_timeout() {
    let out = Command::new(BIN)
        .args(["discover", "--timeout-ms", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
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
