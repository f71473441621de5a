//! Helpers of the transport tests: certificates made on the fly, a TCP proxy that can cut or
//! freeze a connection, a listener on 127.0.0.1.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blazedb::Database;
use blazedb_net::transport::{listen, ListenConfig, ListenEvent, Listener, TlsServerOptions};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Notify};

/// Every test is bounded by this.
pub const TEST_LIMIT: Duration = Duration::from_secs(20);

/// A CA and the files of certificates it signed, in a directory.
pub struct Pki {
    pub ca_pem: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate of the same CA that expired in 2001.
    pub expired_client_cert: PathBuf,
    pub expired_client_key: PathBuf,
}

impl Pki {
    /// A listener's TLS settings with this PKI's server certificate; with
    /// `require_client_certs`, clients must present a certificate its CA signed.
    pub fn server_tls(&self, require_client_certs: bool) -> TlsServerOptions {
        TlsServerOptions {
            cert_pem: self.server_cert.clone(),
            key_pem: self.server_key.clone(),
            client_ca_pem: require_client_certs.then(|| self.ca_pem.clone()),
            client_crl_pem: Vec::new(),
        }
    }
}

/// A fresh self-signed CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate (and an expired one), all written as PEM files under `dir` with `prefix`.
pub fn make_pki(dir: &Path, prefix: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{prefix} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let leaf = |names: Vec<String>, expired: bool| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()], false);
    let (client_cert, client_key) = leaf(vec!["client.test".into()], false);
    let (expired_cert, expired_key) = leaf(vec!["client.test".into()], true);
    let write = |name: &str, pem: &str| {
        let p = dir.join(format!("{prefix}-{name}.pem"));
        std::fs::write(&p, pem).unwrap();
        p
    };
    Pki {
        ca_pem: write("ca", &ca.pem()),
        server_cert: write("server-cert", &server_cert),
        server_key: write("server-key", &server_key),
        client_cert: write("client-cert", &client_cert),
        client_key: write("client-key", &client_key),
        expired_client_cert: write("expired-client-cert", &expired_cert),
        expired_client_key: write("expired-client-key", &expired_key),
    }
}

/// A server certificate for 127.0.0.1 that is its own CA (self-signed with basicConstraints
/// CA:TRUE, what `openssl req -x509` makes by default), and its key, as PEM files.
pub fn self_signed_ca_server(dir: &Path, prefix: &str) -> TlsServerOptions {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let cert_pem = dir.join(format!("{prefix}-ca-server-cert.pem"));
    let key_pem = dir.join(format!("{prefix}-ca-server-key.pem"));
    std::fs::write(&cert_pem, cert.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    TlsServerOptions {
        cert_pem,
        key_pem,
        client_ca_pem: None,
        client_crl_pem: Vec::new(),
    }
}

/// Client options with these TLS settings and every other setting at its default.
pub fn tls_client(tls: blazedb_net::transport::TlsClientOptions) -> blazedb_net::ClientOptions {
    blazedb_net::ClientOptions {
        connect: blazedb_net::transport::ConnectOptions {
            tls,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Listen for `db` on 127.0.0.1 with a free port.
pub async fn listen_tcp(db: Arc<Database>, cfg: ListenConfig) -> Listener {
    listen(
        db,
        ListenConfig {
            tcp: Some("127.0.0.1:0".into()),
            ..cfg
        },
    )
    .await
    .unwrap()
}

/// The next `Ended` event of a listener.
pub async fn next_ended(
    events: &mut broadcast::Receiver<ListenEvent>,
) -> (Option<Box<blazedb_net::SessionReport>>, Option<String>) {
    loop {
        match events.recv().await.unwrap() {
            ListenEvent::Ended { report, error, .. } => return (report, error),
            _ => continue,
        }
    }
}

/// How a [`Proxy`] breaks its first connection.
pub struct Cut {
    /// Forward this many client→server bytes, then close the server side (FIN) and drop
    /// everything else in both directions.
    pub after_bytes: u64,
    /// The client side is closed only once this is notified, so the test can let the
    /// server finish with the first connection before the client reconnects.
    pub release_client: Arc<Notify>,
}

/// A TCP proxy on 127.0.0.1 in front of `target`.
pub struct Proxy {
    pub addr: SocketAddr,
    frozen: watch::Sender<bool>,
}

impl Proxy {
    /// Start proxying; the first connection is cut as `cut` says, later ones are forwarded
    /// whole.
    pub async fn start(target: SocketAddr, cut: Option<Cut>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = watch::channel(false);
        let frozen_rx = frozen.subscribe();
        tokio::spawn(async move {
            let mut cut = cut;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let frozen = frozen_rx.clone();
                match cut.take() {
                    Some(c) => {
                        tokio::spawn(cut_connection(client, server, c));
                    }
                    None => {
                        tokio::spawn(forward(client, server, frozen));
                    }
                }
            }
        });
        Proxy { addr, frozen }
    }

    pub fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Stop forwarding anything, in both directions, without closing: a peer that died
    /// silently, or a network that drops every packet.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }
}

async fn forward(client: TcpStream, server: TcpStream, frozen: watch::Receiver<bool>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let a = pump(cr, sw, frozen.clone());
    let b = pump(sr, cw, frozen);
    tokio::join!(a, b);
}

/// Copy until EOF; once frozen, swallow everything and never close.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = w.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if *frozen.borrow() {
            // Hold both sockets open forever, forwarding nothing.
            let _keep = (r, w);
            std::future::pending::<()>().await;
            return;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn cut_connection(client: TcpStream, server: TcpStream, cut: Cut) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cut_done = Notify::new();
    // Server → client flows until the cut, then is swallowed: ACKs the server sends for
    // what reached it after that never arrive, so the client cannot know what was applied.
    let server_to_client = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut forwarding = true;
        loop {
            tokio::select! {
                r = sr.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) if forwarding => {
                        if cw.write_all(&buf[..n]).await.is_err() {
                            forwarding = false;
                        }
                    }
                    Ok(_) => {}
                },
                _ = cut_done.notified(), if forwarding => forwarding = false,
            }
        }
    };
    let client_to_server = async {
        let mut limited = (&mut cr).take(cut.after_bytes);
        let _ = tokio::io::copy(&mut limited, &mut sw).await;
        cut_done.notify_one();
        // The server reads what got through, then end-of-file, and ends its session.
        let _ = sw.shutdown().await;
    };
    tokio::join!(server_to_client, client_to_server);
    cut.release_client.notified().await;
    drop((cr, cw));
}
