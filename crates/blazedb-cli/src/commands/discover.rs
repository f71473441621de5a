//! `discover`: list the BlazeDB peers that announce themselves on the LAN over mDNS
//! (`blazedb listen` does), one JSON line per peer, ready for `blazedb sync DB URL`.

use std::time::Duration;

use anyhow::{Context as _, Result};
use blazedb_net::discovery::{browse_with, DiscoveryOptions, Interfaces};
use blazedb_net::limits::{DISCOVERY_BROWSE_MS_DEFAULT, MDNS_PORT_DEFAULT};
use clap::Args;

use crate::output::Output;

/// `discover [--timeout-ms N] [--interface NAME]...`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// How long to listen for answers, in ms (at most 10 minutes).
    #[arg(long, default_value_t = DISCOVERY_BROWSE_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub timeout_ms: u64,
    /// Ask only on this network interface (repeat for several; `lo` keeps to this machine).
    /// Default: every interface.
    #[arg(long = "interface", value_name = "NAME")]
    pub interfaces: Vec<String>,
    /// UDP port of mDNS; advertisers must use the same one (tests use a private port).
    #[arg(long, default_value_t = MDNS_PORT_DEFAULT, hide = true)]
    pub mdns_port: u16,
}

/// Browse for `--timeout-ms`, then print each peer still announced as one JSON object:
/// `name`, `node_id`, `addresses`, `port`, `url`, `txt`. No peer prints nothing.
pub fn run(args: &DiscoverArgs) -> Result<()> {
    let opts = DiscoveryOptions {
        interfaces: if args.interfaces.is_empty() {
            Interfaces::All
        } else {
            Interfaces::Named(args.interfaces.clone())
        },
        mdns_port: args.mdns_port,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let peers = runtime.block_on(browse_with(&opts, Duration::from_millis(args.timeout_ms)))?;
    let mut out = Output::stdout();
    for peer in &peers {
        out.json(&peer.to_json())?;
    }
    Ok(out.finish()?)
}
