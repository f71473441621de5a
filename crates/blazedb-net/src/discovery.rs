//! LAN discovery over mDNS / DNS-SD: listeners advertise themselves as `_blazedb._tcp.local.`,
//! `blazedb discover` browses for them.
//!
//! ```text
//!  blazedb listen ──► advertise_listener ──► Advertisement ──► mDNS responder (own thread)
//!                                             (drop = goodbye)        │  announces, answers
//!                                                                     ▼  queries on the LAN
//!  blazedb discover ──► browse(timeout) ──► mDNS querier ──► Vec<DiscoveredPeer { url, .. }>
//! ```
//!
//! The mDNS work runs on the daemon thread of the `mdns-sd` crate (no tokio inside); this
//! module only configures it and turns its events into [`DiscoveredPeer`]s. Every service
//! carries TXT entries that make it a BlazeDB peer:
//!
//! | key     | value                                                        |
//! |---------|--------------------------------------------------------------|
//! | `node`  | the advertiser's node id, 32 hex digits (required)           |
//! | `proto` | URL scheme to connect with: `tcp` (default), `tls`, `ws` or `wss` |
//! | `v`     | sync protocol version (`blazedb::limits::PROTOCOL_VERSION`, required) |
//! | `path`  | URL path of the `ws` and `wss` schemes, e.g. `/v1/sync`      |
//!
//! A service without a valid `node` is ignored: it is not a BlazeDB peer. Nor is one that
//! speaks another protocol version (its sessions would fail with `UNSUPPORTED_VERSION`),
//! names another scheme (the URL must be one `blazedb sync` connects to over the network:
//! a `unix` scheme would read the address as a local socket path), or announces port 0. A
//! `path` is used with `ws` and `wss` only. Everything a peer announces is untrusted input;
//! discovery only finds addresses, and the session's HELLO (and token) still decides who
//! the peer is.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), blazedb_net::discovery::DiscoveryError> {
//! use std::time::Duration;
//! use blazedb_net::discovery;
//!
//! let node = blazedb::NodeId::random();
//! let _ad = discovery::advertise_listener(node, "0.0.0.0:7421".parse().unwrap(), false)?;
//! for peer in discovery::browse(Duration::from_secs(3)).await? {
//!     println!("{} {} at {}", peer.name, peer.node_id, peer.url);
//! }
//! # Ok(()) }
//! ```
//!
//! Tests pass [`DiscoveryOptions::loopback`], which keeps every mDNS packet on 127.0.0.1
//! (and a port of their own, so parallel tests and a system responder do not see each
//! other).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use blazedb::NodeId;
use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};
use serde_json::{json, Value as Json};
use tokio::time::{timeout_at, Instant};

use crate::limits::{
    DISCOVERY_INSTANCE_NAME_BYTES_MAX, DISCOVERY_PEERS_MAX, DISCOVERY_TXT_ENTRIES_MAX,
    DISCOVERY_TXT_ENTRY_BYTES_MAX, DISCOVERY_WITHDRAW_WAIT_MS, MDNS_PORT_DEFAULT,
};

/// The DNS-SD service type every BlazeDB peer advertises.
pub const SERVICE_TYPE: &str = "_blazedb._tcp.local.";

/// TXT key of the advertiser's node id.
pub const TXT_NODE: &str = "node";
/// TXT key of the URL scheme (`tcp`, `tls`, `ws`, `wss`).
pub const TXT_PROTO: &str = "proto";
/// TXT key of the sync protocol version.
pub const TXT_VERSION: &str = "v";
/// TXT key of the URL path (HTTP-based schemes).
pub const TXT_PATH: &str = "path";

/// The URL schemes a discovered peer may announce: the network transports of
/// `blazedb sync`. The last two are HTTP-based and take a `path`.
const SCHEMES: [&str; 4] = ["tcp", "tls", "ws", "wss"];

/// Which network interfaces mDNS uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Interfaces {
    /// Every interface the operating system reports (the LAN, and loopback).
    #[default]
    All,
    /// Only 127.0.0.1: peers on this machine. Packets never leave it.
    Loopback,
    /// Only the interfaces with these names (`eth0`, `lo`, `en0`, ...).
    Named(Vec<String>),
}

impl fmt::Display for Interfaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interfaces::All => f.write_str("all interfaces"),
            Interfaces::Loopback => f.write_str("loopback only"),
            Interfaces::Named(names) => write!(f, "interfaces {}", names.join(", ")),
        }
    }
}

/// Where and how mDNS runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// The interfaces to announce and listen on.
    pub interfaces: Interfaces,
    /// UDP port of mDNS: 5353 ([`MDNS_PORT_DEFAULT`]) to meet other hosts. Another port
    /// makes a private discovery domain (tests); advertiser and browser must agree.
    pub mdns_port: u16,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        DiscoveryOptions {
            interfaces: Interfaces::All,
            mdns_port: MDNS_PORT_DEFAULT,
        }
    }
}

impl DiscoveryOptions {
    /// Loopback only, on `mdns_port`: discovery among the processes of this machine.
    pub fn loopback(mdns_port: u16) -> DiscoveryOptions {
        DiscoveryOptions {
            interfaces: Interfaces::Loopback,
            mdns_port,
        }
    }
}

/// Why advertising or browsing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The mDNS daemon could not start, or refused a command.
    #[error("mDNS daemon: {0}")]
    Daemon(String),
    /// No interface matched the selection or none is up with an address, so nothing can be
    /// announced or heard.
    #[error(
        "no usable network interface for mDNS ({selection}): bring an interface up or choose \
         another with --interface"
    )]
    NoUsableInterface {
        /// The interface selection that matched nothing.
        selection: Interfaces,
    },
    /// The instance name cannot be carried by DNS-SD.
    #[error("invalid service name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TXT entry cannot be carried by DNS-SD, or uses a key this module sets itself.
    #[error("invalid TXT entry {key:?}: {reason}")]
    InvalidTxt {
        /// The entry's key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl From<mdns_sd::Error> for DiscoveryError {
    fn from(e: mdns_sd::Error) -> Self {
        DiscoveryError::Daemon(e.to_string())
    }
}

/// A service being announced. Dropping it withdraws the service (a goodbye packet, so
/// browsers forget it at once) and stops its mDNS responder; [`Advertisement::withdraw`]
/// does the same and waits until the goodbye went out.
pub struct Advertisement {
    daemon: Daemon,
    fullname: String,
    name: String,
    withdrawn: bool,
}

impl Advertisement {
    /// The instance name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full DNS-SD name: `<instance>._blazedb._tcp.local.`.
    pub fn fullname(&self) -> &str {
        &self.fullname
    }

    /// Withdraw the service and wait (at most [`DISCOVERY_WITHDRAW_WAIT_MS`]) until the
    /// daemon sent its goodbye.
    pub async fn withdraw(mut self) -> Result<(), DiscoveryError> {
        self.withdrawn = true;
        let status = self.daemon.0.unregister(&self.fullname)?;
        let wait = Duration::from_millis(DISCOVERY_WITHDRAW_WAIT_MS);
        match tokio::time::timeout(wait, status.recv_async()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(DiscoveryError::Daemon(
                "the mDNS daemon stopped before withdrawing the service".into(),
            )),
            Err(_) => Err(DiscoveryError::Daemon(format!(
                "the mDNS daemon did not withdraw the service within {DISCOVERY_WITHDRAW_WAIT_MS} ms"
            ))),
        }
    }
}

impl fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Advertisement")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        if !self.withdrawn {
            // The daemon handles commands in order: the goodbye goes out before it exits
            // (`Daemon`'s drop). Not waiting keeps drop non-blocking on async threads.
            let _ = self.daemon.0.unregister(&self.fullname);
        }
    }
}

/// A BlazeDB peer found on the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredPeer {
    /// The instance name (without `._blazedb._tcp.local.`).
    pub name: String,
    /// The node id the peer announces (its HELLO must still match: a peer can lie here).
    pub node_id: NodeId,
    /// Its addresses, IPv4 first, each once.
    pub addresses: Vec<IpAddr>,
    /// Its TCP port.
    pub port: u16,
    /// A URL for `blazedb sync`, built from `proto`, the preferred address and the port.
    pub url: String,
    /// Every TXT entry it announced.
    pub txt: BTreeMap<String, String>,
}

impl DiscoveredPeer {
    /// One JSON object: `name`, `node_id`, `addresses`, `port`, `url`, `txt`.
    pub fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "node_id": self.node_id.to_string(),
            "addresses": self.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "port": self.port,
            "url": self.url,
            "txt": self.txt,
        })
    }

    /// Parse a resolved service; `None` when it is not a usable BlazeDB peer (see
    /// [`DiscoveredPeer::from_announcement`]).
    fn from_resolved(svc: &ResolvedService) -> Option<DiscoveredPeer> {
        let suffix = format!(".{SERVICE_TYPE}");
        let name = svc.get_fullname().strip_suffix(&suffix)?.to_string();
        let mut txt = BTreeMap::new();
        for p in svc.txt_properties.iter().take(DISCOVERY_TXT_ENTRIES_MAX) {
            txt.insert(p.key().to_string(), p.val_str().to_string());
        }
        let addresses = svc.get_addresses().iter().map(|a| a.to_ip_addr()).collect();
        DiscoveredPeer::from_announcement(name, txt, addresses, svc.get_port())
    }

    /// A peer from what a service announced; `None` when it is not a usable BlazeDB peer: no
    /// valid node id, another protocol version, a scheme other than [`SCHEMES`], a malformed
    /// path, port 0, or no address a URL can carry.
    fn from_announcement(
        name: String,
        txt: BTreeMap<String, String>,
        mut addresses: Vec<IpAddr>,
        port: u16,
    ) -> Option<DiscoveredPeer> {
        let node_id: NodeId = txt.get(TXT_NODE)?.parse().ok()?;
        let version: u16 = txt.get(TXT_VERSION)?.parse().ok()?;
        if version != blazedb::limits::PROTOCOL_VERSION {
            return None;
        }
        let proto = txt.get(TXT_PROTO).map_or("tcp", String::as_str);
        if !SCHEMES.contains(&proto) {
            return None;
        }
        let path = match txt.get(TXT_PATH) {
            // `tcp` and `tls` URLs take no path (`blazedb sync` refuses one): ignore it.
            _ if !matches!(proto, "ws" | "wss") => "",
            Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => p.as_str(),
            Some(_) => return None,
            None => "",
        };
        if port == 0 {
            return None;
        }
        addresses.sort_by_key(|a| (a.is_ipv6(), *a));
        addresses.dedup();
        // A link-local IPv6 address needs a zone in a URL, which `blazedb sync` does not
        // take: prefer anything else.
        let host = addresses.iter().find(|a| match a {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
        })?;
        let url = format!("{proto}://{}{path}", SocketAddr::new(*host, port));
        Some(DiscoveredPeer {
            name,
            node_id,
            addresses,
            port,
            url,
            txt,
        })
    }
}

/// Announce `name` on `port` on every interface ([`DiscoveryOptions::default`]) with the
/// node id and `txt` entries, until the returned [`Advertisement`] is dropped.
pub fn advertise(
    name: &str,
    port: u16,
    node_id: NodeId,
    txt: &[(&str, &str)],
) -> Result<Advertisement, DiscoveryError> {
    advertise_with(&DiscoveryOptions::default(), name, None, port, node_id, txt)
}

/// [`advertise`] with options, and optionally one address instead of every address of the
/// chosen interfaces (`ip: None`, or an unspecified `0.0.0.0` / `::`, announces them all).
pub fn advertise_with(
    opts: &DiscoveryOptions,
    name: &str,
    ip: Option<IpAddr>,
    port: u16,
    node_id: NodeId,
    txt: &[(&str, &str)],
) -> Result<Advertisement, DiscoveryError> {
    check_instance_name(name)?;
    let node = node_id.to_string();
    let version = blazedb::limits::PROTOCOL_VERSION.to_string();
    let mut props: Vec<(&str, &str)> = vec![(TXT_NODE, &node), (TXT_VERSION, &version)];
    if txt.len() > DISCOVERY_TXT_ENTRIES_MAX - props.len() {
        return Err(DiscoveryError::InvalidTxt {
            key: txt[0].0.to_string(),
            reason: "too many TXT entries",
        });
    }
    for &(key, value) in txt {
        check_txt(key, value)?;
        props.push((key, value));
    }
    // The host name only has to be unique on the link: the node id is.
    let host = format!("blazedb-{}.local.", &node[..12]);
    let ip = ip.filter(|ip| !ip.is_unspecified());
    let info = match ip {
        Some(ip) => ServiceInfo::new(SERVICE_TYPE, name, &host, ip, port, &props[..])?,
        None => {
            ServiceInfo::new(SERVICE_TYPE, name, &host, "", port, &props[..])?.enable_addr_auto()
        }
    };
    let fullname = info.get_fullname().to_string();
    let daemon = Daemon::start(opts)?;
    daemon.0.register(info)?;
    Ok(Advertisement {
        daemon,
        fullname,
        name: name.to_string(),
        withdrawn: false,
    })
}

/// Announce a `blazedb listen` endpoint on every interface: instance `blazedb-<node id>`,
/// TXT `proto=tls` when `tls`, else `proto=tcp`. A listener bound to `0.0.0.0` (or `::`)
/// announces every address of the machine; one bound to a single address announces that
/// one. Keep the [`Advertisement`] for as long as the listener accepts connections.
pub fn advertise_listener(
    node_id: NodeId,
    addr: SocketAddr,
    tls: bool,
) -> Result<Advertisement, DiscoveryError> {
    advertise_listener_with(&DiscoveryOptions::default(), node_id, addr, tls)
}

/// [`advertise_listener`] with options.
pub fn advertise_listener_with(
    opts: &DiscoveryOptions,
    node_id: NodeId,
    addr: SocketAddr,
    tls: bool,
) -> Result<Advertisement, DiscoveryError> {
    let name = listener_name(node_id);
    let proto = if tls { "tls" } else { "tcp" };
    advertise_with(
        opts,
        &name,
        Some(addr.ip()),
        addr.port(),
        node_id,
        &[(TXT_PROTO, proto)],
    )
}

/// The instance name [`advertise_listener`] uses for a node.
pub fn listener_name(node_id: NodeId) -> String {
    format!("blazedb-{node_id}")
}

/// Browse every interface ([`DiscoveryOptions::default`]) for BlazeDB peers during
/// `timeout`, and return those still announced at the end, sorted by name.
pub async fn browse(timeout: Duration) -> Result<Vec<DiscoveredPeer>, DiscoveryError> {
    browse_with(&DiscoveryOptions::default(), timeout).await
}

/// [`browse`] with options. At most [`DISCOVERY_PEERS_MAX`] peers are kept.
///
/// Fails with [`DiscoveryError::NoUsableInterface`] when the daemon reports that it queries
/// on no interface at all: an empty result then would look like "no peers" when nothing
/// was asked.
pub async fn browse_with(
    opts: &DiscoveryOptions,
    timeout: Duration,
) -> Result<Vec<DiscoveredPeer>, DiscoveryError> {
    let daemon = Daemon::start(opts)?;
    let events = daemon.0.browse(SERVICE_TYPE)?;
    let deadline = Instant::now() + timeout;
    let mut peers: BTreeMap<String, DiscoveredPeer> = BTreeMap::new();
    loop {
        let event = match timeout_at(deadline, events.recv_async()).await {
            Ok(Ok(event)) => event,
            Ok(Err(_)) => {
                return Err(DiscoveryError::Daemon(
                    "the mDNS daemon stopped while browsing".into(),
                ))
            }
            Err(_) => break,
        };
        match event {
            // The daemon's only report of the interfaces it queries on is this message,
            // "<type> on <n> interfaces [<names>]".
            ServiceEvent::SearchStarted(msg) if msg.contains(" on 0 interfaces") => {
                return Err(DiscoveryError::NoUsableInterface {
                    selection: opts.interfaces.clone(),
                });
            }
            ServiceEvent::ServiceResolved(svc) => {
                let fullname = svc.get_fullname().to_string();
                match DiscoveredPeer::from_resolved(&svc) {
                    Some(peer) if peers.len() < DISCOVERY_PEERS_MAX => {
                        peers.insert(fullname, peer);
                    }
                    Some(peer) => {
                        if let Some(known) = peers.get_mut(&fullname) {
                            *known = peer;
                        }
                    }
                    None => {
                        peers.remove(&fullname);
                    }
                }
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                peers.remove(&fullname);
            }
            _ => {}
        }
    }
    let _ = daemon.0.stop_browse(SERVICE_TYPE);
    let mut found: Vec<DiscoveredPeer> = peers.into_values().collect();
    found.sort_by(|a, b| (&a.name, a.node_id).cmp(&(&b.name, b.node_id)));
    Ok(found)
}

/// An mDNS daemon configured for `DiscoveryOptions`, shut down on drop.
struct Daemon(ServiceDaemon);

impl Daemon {
    fn start(opts: &DiscoveryOptions) -> Result<Daemon, DiscoveryError> {
        let daemon = Daemon(ServiceDaemon::new_with_port(opts.mdns_port)?);
        // Commands run in order on the daemon thread, so these apply before any register
        // or browse: nothing is ever sent on an interface outside the selection.
        match &opts.interfaces {
            Interfaces::All => {}
            Interfaces::Loopback => {
                daemon.0.disable_interface(IfKind::All)?;
                daemon.0.enable_interface(IfKind::LoopbackV4)?;
            }
            Interfaces::Named(names) => {
                daemon.0.disable_interface(IfKind::All)?;
                let kinds: Vec<IfKind> = names.iter().map(|n| IfKind::Name(n.clone())).collect();
                daemon.0.enable_interface(kinds)?;
            }
        }
        Ok(daemon)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The thread exits after the commands queued before this one.
        let _ = self.0.shutdown();
    }
}

fn check_instance_name(name: &str) -> Result<(), DiscoveryError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > DISCOVERY_INSTANCE_NAME_BYTES_MAX {
        "longer than 63 bytes"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(DiscoveryError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

fn check_txt(key: &str, value: &str) -> Result<(), DiscoveryError> {
    let reason = if key.is_empty() {
        "empty key"
    } else if key == TXT_NODE || key == TXT_VERSION {
        "set by the advertiser itself"
    } else if key.contains('=') || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        "keys are printable ASCII without '='"
    } else if key.len() + 1 + value.len() > DISCOVERY_TXT_ENTRY_BYTES_MAX {
        "key=value is longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(DiscoveryError::InvalidTxt {
        key: key.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_txt_entries_are_checked_before_anything_is_sent() {
        assert!(check_instance_name("laptop").is_ok());
        assert!(check_instance_name("").is_err());
        assert!(check_instance_name(&"x".repeat(64)).is_err());
        assert!(check_instance_name("a\nb").is_err());
        assert!(check_txt("proto", "tls").is_ok());
        assert!(check_txt("node", "x").is_err(), "node is the advertiser's");
        assert!(check_txt("a=b", "x").is_err());
        assert!(check_txt("k", &"v".repeat(254)).is_err());
        assert!(check_txt("k", &"v".repeat(253)).is_ok());
    }

    #[test]
    fn listener_names_carry_the_whole_node_id() {
        let node: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        assert_eq!(
            listener_name(node),
            "blazedb-0123456789abcdef0123456789abcdef"
        );
        assert!(check_instance_name(&listener_name(node)).is_ok());
    }

    /// What a hostile or foreign service announces never becomes a URL `blazedb sync` would
    /// misread or refuse.
    #[test]
    fn announced_values_make_a_url_only_when_blazedb_sync_can_use_it() {
        let node = "0123456789abcdef0123456789abcdef";
        let version = blazedb::limits::PROTOCOL_VERSION.to_string();
        let peer = |entries: &[(&str, &str)], port: u16| {
            let txt = entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let addresses = vec!["1.2.3.4".parse().unwrap()];
            DiscoveredPeer::from_announcement("p".into(), txt, addresses, port)
        };
        let url = |entries: &[(&str, &str)]| peer(entries, 7421).map(|p| p.url);
        let v = ("v", version.as_str());
        let n = ("node", node);

        assert_eq!(url(&[n, v]).as_deref(), Some("tcp://1.2.3.4:7421"));
        assert_eq!(
            url(&[n, v, ("proto", "tls")]).as_deref(),
            Some("tls://1.2.3.4:7421")
        );
        assert_eq!(
            url(&[n, v, ("proto", "wss"), ("path", "/v1/sync")]).as_deref(),
            Some("wss://1.2.3.4:7421/v1/sync")
        );
        assert_eq!(
            url(&[n, v, ("proto", "tcp"), ("path", "/v1/sync")]).as_deref(),
            Some("tcp://1.2.3.4:7421"),
            "a path is for ws and wss only"
        );
        for proto in ["unix", "http", "file", "TCP", ""] {
            assert_eq!(url(&[n, v, ("proto", proto)]), None, "{proto}");
        }
        assert_eq!(url(&[n, v, ("proto", "ws"), ("path", "v1")]), None);
        assert_eq!(peer(&[n, v], 0), None, "port 0");
        let other = (blazedb::limits::PROTOCOL_VERSION + 1).to_string();
        for bad in [other.as_str(), "x", "65536", ""] {
            assert_eq!(url(&[n, ("v", bad)]), None, "v={bad}");
        }
        assert_eq!(url(&[n]), None, "no protocol version");
        assert_eq!(url(&[v]), None, "no node id");
    }

    #[test]
    fn default_options_use_the_standard_port_on_every_interface() {
        let opts = DiscoveryOptions::default();
        assert_eq!(opts.mdns_port, 5353);
        assert_eq!(opts.interfaces, Interfaces::All);
    }
}
