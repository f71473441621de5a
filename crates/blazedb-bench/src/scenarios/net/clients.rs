//! The relay in-process (`blazedb_relay::Relay` on 127.0.0.1, port 0, a static token, the
//! default limits of `blazedb serve`) and database clients syncing with it over WebSockets,
//! as `blazedb sync DB ws://… --watch --token T` does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use blazedb::sync::SessionConfig;
use blazedb::{Database, PeerDirection};
use blazedb_net::ws::{websocket_config, WsStream};
use blazedb_net::{run_session, DriverOptions, NetError, SessionMonitor, SessionReport};
use blazedb_relay::{AuthConfig, Relay, RelayConfig, RelayError};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::{named_runtime, RUNTIME_WORKERS, TOKEN};

/// How long a session may take to end politely when a scenario stops it.
const FINISH_WAIT: Duration = Duration::from_secs(15);

/// A relay serving on a runtime of its own: its own [`RUNTIME_WORKERS`] threads, as the
/// `blazedb serve` process it stands for has. On the clients' runtime its tasks would queue
/// behind the clients' applies: with 1,000 clients, a change waited for a pass over every
/// client before the relay applied it, another before the relay's sessions read it, and a
/// third before the clients did.
#[derive(Debug)]
pub(super) struct LocalRelay {
    pub addr: SocketAddr,
    pub db: Arc<Database>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RelayError>>,
    /// Shut down in the background on drop: `stop` is awaited inside the clients' runtime,
    /// where a runtime may not be dropped.
    runtime: Option<Runtime>,
}

impl LocalRelay {
    /// Start a relay whose store lives in `dir`.
    pub(super) fn start(dir: &Path) -> Result<LocalRelay> {
        let runtime = named_runtime("relay", RUNTIME_WORKERS)?;
        let config = RelayConfig {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().expect("valid address"),
            auth: AuthConfig::Token(TOKEN.into()),
            ..RelayConfig::default()
        };
        let relay = runtime
            .block_on(Relay::bind(config))
            .context("starting the relay")?;
        let (addr, db) = (relay.local_addr(), relay.database());
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = runtime.spawn(relay.run(async move { s.cancelled().await }));
        Ok(LocalRelay {
            addr,
            db,
            stop,
            task,
            runtime: Some(runtime),
        })
    }

    /// Shut down (sessions get their goodbye) and wait for the relay to finish.
    pub(super) async fn stop(mut self) -> Result<()> {
        self.stop.cancel();
        (&mut self.task)
            .await
            .context("relay task")?
            .context("relay")?;
        Ok(())
    }
}

impl Drop for LocalRelay {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Open a WebSocket to the relay's `/v1/sync` with the token as a bearer credential (what a
/// browser or `blazedb sync ws://…` sends), with BlazeDB's WebSocket limits.
pub(super) async fn ws_connect(addr: SocketAddr) -> Result<WebSocketStream<TcpStream>> {
    let mut req = format!("ws://{addr}/v1/sync")
        .into_client_request()
        .context("building the upgrade request")?;
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}")
            .parse()
            .expect("a valid header value"),
    );
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the relay at {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, tcp, Some(websocket_config()))
        .await
        .context("WebSocket upgrade at the relay")?;
    Ok(ws)
}

/// A database syncing with the relay in the background (both directions, until stopped).
#[derive(Debug)]
pub(super) struct SyncClient {
    pub db: Arc<Database>,
    pub monitor: SessionMonitor,
    stop: CancellationToken,
    task: JoinHandle<Result<SessionReport, NetError>>,
}

impl SyncClient {
    /// Connect `db` to the relay at `addr` and start its session (call inside the runtime).
    pub(super) async fn connect(addr: SocketAddr, db: Arc<Database>) -> Result<SyncClient> {
        let ws = ws_connect(addr).await?;
        let monitor = SessionMonitor::new();
        let stop = CancellationToken::new();
        let opts = DriverOptions {
            shutdown: stop.clone(),
            monitor: Some(monitor.clone()),
            ..DriverOptions::default()
        };
        let cfg = SessionConfig {
            token: TOKEN.into(),
            ..SessionConfig::default()
        };
        let task = tokio::spawn(run_session(db.clone(), WsStream::new(ws), cfg, opts));
        Ok(SyncClient {
            db,
            monitor,
            stop,
            task,
        })
    }

    /// Fail when the session has ended (refused, rate-limited, cut): a figure measured
    /// without it would be wrong.
    pub(super) fn check_alive(&self) -> Result<()> {
        if self.task.is_finished() {
            bail!(
                "a client's session ended during the run (see the relay's session_closed line \
                 on stderr for why)"
            );
        }
        Ok(())
    }

    /// Whether this client holds everything the relay's feed holds up to `relay_head`.
    pub(super) fn holds(&self, relay: &Database, relay_head: blazedb::Seq) -> Result<bool> {
        Ok(self
            .db
            .peer_cursor(relay.node_id(), PeerDirection::Received)?
            >= relay_head)
    }

    /// End the session politely and return its report.
    pub(super) async fn finish(self) -> Result<SessionReport> {
        self.stop.cancel();
        let r = tokio::time::timeout(FINISH_WAIT, self.task)
            .await
            .context("a client session did not end in time")?
            .context("client session task")?;
        Ok(r?)
    }
}
