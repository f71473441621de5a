//! # blazedb-relay
//!
//! The BlazeDB relay server (`blazedb serve`): a BlazeDB node like any other — one store,
//! many sync sessions — plus authentication, row-level access rules, server-side queries,
//! health and Prometheus metrics (DESIGN decision 9).
//!
//! ```text
//!  client ══ wss://…/v1/sync ══╗                 ┌──────────── relay ────────────┐
//!  client ══ tcp:// (HELLO token)╬═► Guard ─► session ─┐                           │
//!  client ══ unix://            ══╝  (rate,   (access  ├─► Database (relay.db) ───┤
//!                                    HELLO     rules)  │   server role, one feed   │
//!  curl ─── POST /v1/query ─────────────────────────────┘   commit wakes every     │
//!  Prometheus ─ GET /metrics,  LB ─ GET /health             session: fan-out       │
//!                                                     └───────────────────────────────┘
//! ```
//!
//! - [`config`]: [`RelayConfig`], one field per `blazedb serve` flag, and [`Limits`].
//! - [`server`]: [`Relay`] (bind, run) and [`serve`].
//! - [`auth`]: static token and JWT (HS*, RS*/PS*, EdDSA, ES*); claims become `$auth.*`.
//! - `blazedb_net::auth_failures` (shared with `blazedb listen`): failed credentials per
//!   client address; past a limit, that address's attempts are refused unread for a while
//!   (`429 auth_rate_limited`, `RATE_LIMITED`).
//! - `forwarded`: the client's address behind trusted reverse proxies ([`TrustedProxy`],
//!   `X-Forwarded-For`), for that limit and the log.
//! - [`rules`]: the TOML rules file; [`access`]: the per-connection `AccessControl`.
//! - [`http`]: `/v1/sync`, `/v1/query`, `/health`, `/metrics`.
//! - [`session`]: one client's sync session; [`guard`]: rate limit, HELLO deadline, the
//!   relay's own ERROR frames.
//! - [`gc`]: periodic garbage collection of the store (`--gc-interval`).
//! - [`metrics`]: what `/metrics` exports; [`limits`]: every limit, named.
//! - `log_throttle`: the `session_closed` log lines, at most a few per reason a minute.
//! - `store_watch`: whether the store can take writes (deleted file, full disk), for
//!   `/health`.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), blazedb_relay::RelayError> {
//! use blazedb_relay::{serve, AuthConfig, RelayConfig};
//!
//! let config = RelayConfig {
//!     data_dir: "./blazedb-data".into(),
//!     auth: AuthConfig::Token("s3cret-token-of-the-relay".into()),
//!     rules: Some("rules.toml".into()),
//!     ..RelayConfig::default()
//! };
//! serve(config, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Log lines go through `log::line`, which a closed stderr does not stop.
#![deny(clippy::print_stderr, clippy::print_stdout)]

pub mod access;
pub mod auth;
pub mod config;
mod data_dir;
pub mod error;
mod forwarded;
pub mod gc;
pub mod guard;
pub mod http;
pub mod limits;
mod log;
mod log_throttle;
pub mod metrics;
mod origin;
pub mod rules;
pub mod server;
pub mod session;
mod slots;
mod state;
mod store_watch;
mod tls;

pub use config::{AuthConfig, Limits, RelayConfig, Secret, TlsFiles};
pub use error::RelayError;
pub use forwarded::{TrustedProxy, TrustedProxyError};
pub use server::{serve, Relay};
