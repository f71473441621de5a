//! TLS for `tls://` (and `wss://`): rustls with the `ring` provider, configured from PEM
//! files.
//!
//! - Server: a certificate chain and its key, read again when the files change (a renewed
//!   certificate is served without a restart: [`ReloadingCertificate`]); optionally a CA
//!   whose certificates clients must present ([`TlsServerOptions::client_ca_pem`]), and revocation lists of certificates
//!   no longer accepted ([`TlsServerOptions::client_crl_pem`]), read again whenever they
//!   change — and then every open session's certificate is judged again
//!   ([`ServerTls::recheck`]).
//! - Client: trusts the built-in web roots, or only the CA in [`TlsClientOptions::ca_pem`]
//!   when one is given (a private CA, a self-signed development certificate); optionally
//!   presents a client certificate. [`TlsClientOptions::danger_accept_invalid_certs`] skips
//!   certificate verification altogether — the channel is still encrypted, but anyone in
//!   the path can impersonate the server. Development only.
//!
//! The provider is passed explicitly (`builder_with_provider`) so that another crate of the
//! process enabling a second rustls provider cannot make config building ambiguous.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::sync::watch;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::driver::CredentialRecheck;
use crate::file_stamp::{file_stamp, FileStamp};
use crate::limits::TLS_FILES_CHECK_INTERVAL_MS;
use crate::transport::TransportError;

/// TLS settings of a listener.
#[derive(Clone, Debug)]
pub struct TlsServerOptions {
    /// PEM file with the server's certificate chain, leaf first.
    pub cert_pem: PathBuf,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PathBuf,
    /// When set, clients must present a certificate signed by a CA in this PEM file.
    pub client_ca_pem: Option<PathBuf>,
    /// PEM files of certificate revocation lists (CRLs) of that CA (with `client_ca_pem`):
    /// a client certificate on one is refused. See [`RevocationChecked`].
    pub client_crl_pem: Vec<PathBuf>,
}

/// TLS settings of a client.
#[derive(Clone, Debug, Default)]
pub struct TlsClientOptions {
    /// Trust only the CA certificates in this PEM file instead of the built-in web roots.
    pub ca_pem: Option<PathBuf>,
    /// PEM file with a client certificate chain to present (with `client_key_pem`).
    pub client_cert_pem: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    pub client_key_pem: Option<PathBuf>,
    /// Accept any server certificate: expired, self-signed, for another name. The traffic
    /// is encrypted but the server is not authenticated. For development setups only.
    pub danger_accept_invalid_certs: bool,
}

/// A listener's TLS: the configuration handshakes are accepted with, the certificate it
/// serves (read again when its files change) and, when client certificates are checked
/// against revocation lists, those lists, against which open sessions are judged again when
/// they change.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// What handshakes are accepted with.
    pub config: Arc<ServerConfig>,
    /// The certificate and key served.
    pub certificate: Arc<ReloadingCertificate>,
    /// The client certificate check with revocation lists, when lists were given.
    pub revocation: Option<Arc<RevocationChecked>>,
}

/// What [`ServerTls::watch_files`] reports, for the listener's log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFilesEvent {
    /// The certificate or key file changed, and the new pair is served from the next
    /// handshake on.
    CertificateReloaded,
    /// The certificate or key file changed, but the two cannot be used (why: a file
    /// half-written, a key written after its certificate); the pair loaded before is still
    /// served, and the files are tried again when they change.
    CertificateUnusable(String),
    /// The client certificate revocation lists cannot be read or parsed (which file and
    /// why): every new client certificate is refused meanwhile; open sessions stay.
    RevocationListsUnusable(String),
    /// The revocation lists can be used again.
    RevocationListsUsable,
}

impl TlsFilesEvent {
    /// The event as a JSON log line (`event`: `tls_certificate_reloaded`,
    /// `tls_certificate_unusable`, `tls_client_crl_unusable`, `tls_client_crl_usable`; `error`
    /// where something is wrong), as the relay and `blazedb listen` print it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            TlsFilesEvent::CertificateReloaded => {
                serde_json::json!({ "event": "tls_certificate_reloaded" })
            }
            TlsFilesEvent::CertificateUnusable(error) => {
                serde_json::json!({ "event": "tls_certificate_unusable", "error": error })
            }
            TlsFilesEvent::RevocationListsUnusable(error) => {
                serde_json::json!({ "event": "tls_client_crl_unusable", "error": error })
            }
            TlsFilesEvent::RevocationListsUsable => {
                serde_json::json!({ "event": "tls_client_crl_usable" })
            }
        }
    }
}

impl ServerTls {
    /// An acceptor for server-side handshakes.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The same, offering `alpn` to clients (e.g. `http/1.1`); the certificate and the
    /// revocation lists stay shared.
    pub fn with_alpn(&self, alpn: &[&[u8]]) -> ServerTls {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        ServerTls {
            config: Arc::new(config),
            certificate: self.certificate.clone(),
            revocation: self.revocation.clone(),
        }
    }

    /// For the session on `stream`: its client certificate judged again each time the
    /// revocation lists change (and once at the start, for a change between the handshake
    /// and now). `None` without revocation lists or client certificate.
    pub fn recheck<IO>(
        &self,
        stream: &tokio_rustls::server::TlsStream<IO>,
    ) -> Option<CredentialRecheck> {
        let revocation = self.revocation.as_ref()?;
        let chain = stream.get_ref().1.peer_certificates()?;
        revocation.recheck(chain)
    }

    /// Look whether the certificate, its key or the revocation lists changed every
    /// [`TLS_FILES_CHECK_INTERVAL_MS`], until `stop`. A changed certificate is served from the
    /// next handshake on; changed lists are read at once and judge every open session again.
    /// `report` is told what changed ([`TlsFilesEvent`]): each new certificate, and each
    /// time the certificate or the lists turn unusable (or usable again).
    pub async fn watch_files(&self, stop: CancellationToken, report: impl Fn(TlsFilesEvent)) {
        let mut lists_usable = Ok(());
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(
            TLS_FILES_CHECK_INTERVAL_MS,
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Some(event) = self.certificate.refresh() {
                report(event);
            }
            if let Some(revocation) = &self.revocation {
                let now = revocation.refresh();
                if now != lists_usable {
                    lists_usable = now.clone();
                    report(match now {
                        Ok(()) => TlsFilesEvent::RevocationListsUsable,
                        Err(why) => TlsFilesEvent::RevocationListsUnusable(why),
                    });
                }
            }
        }
    }
}

/// The server's certificate chain and key, read again when either file changes, so that a
/// renewed certificate (an ACME client such as certbot replaces the files every 60–90 days)
/// is served from the next handshake on without a restart, which would end every session.
/// Until the files can be used together — a certificate written before its key, a file
/// caught half-written — the pair loaded last goes on being served, and the change is
/// reported ([`TlsFilesEvent::CertificateUnusable`]); the files are tried again when they
/// change. Sessions already open keep the certificate they were accepted with, as TLS does.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_pem: PathBuf,
    key_pem: PathBuf,
    provider: Arc<CryptoProvider>,
    loaded: std::sync::Mutex<LoadedCertificate>,
}

#[derive(Debug)]
struct LoadedCertificate {
    /// The certificate's and the key's files when last read.
    stamps: Vec<Option<FileStamp>>,
    /// What is served.
    served: Arc<CertifiedKey>,
}

impl ReloadingCertificate {
    /// Read the pair now: a server does not start without a usable one.
    fn new(
        cert_pem: &Path,
        key_pem: &Path,
        provider: Arc<CryptoProvider>,
    ) -> Result<ReloadingCertificate, TransportError> {
        let paths = [cert_pem.to_path_buf(), key_pem.to_path_buf()];
        let stamps = stamps(&paths);
        let served = Arc::new(certified_key(cert_pem, key_pem, &provider)?);
        Ok(ReloadingCertificate {
            cert_pem: cert_pem.to_path_buf(),
            key_pem: key_pem.to_path_buf(),
            provider,
            loaded: std::sync::Mutex::new(LoadedCertificate { stamps, served }),
        })
    }

    /// The certificate served now.
    pub fn served(&self) -> Arc<CertifiedKey> {
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .served
            .clone()
    }

    /// Read the files again if either changed: what happened, `None` when they did not.
    pub fn refresh(&self) -> Option<TlsFilesEvent> {
        let stamps = stamps(&[self.cert_pem.clone(), self.key_pem.clone()]);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.stamps == stamps {
            return None;
        }
        loaded.stamps = stamps;
        Some(
            match certified_key(&self.cert_pem, &self.key_pem, &self.provider) {
                Ok(pair) => {
                    loaded.served = Arc::new(pair);
                    TlsFilesEvent::CertificateReloaded
                }
                Err(e) => TlsFilesEvent::CertificateUnusable(format!(
                    "{e}; the certificate loaded before is still served"
                )),
            },
        )
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served())
    }
}

/// The certificate chain in `cert_pem` with the key in `key_pem`, checked to belong together.
fn certified_key(
    cert_pem: &Path,
    key_pem: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<CertifiedKey, TransportError> {
    CertifiedKey::from_der(certs(cert_pem)?, key(key_pem)?, provider).map_err(|e| {
        TransportError::TlsConfig {
            path: key_pem.to_path_buf(),
            reason: format!(
                "this key cannot serve the certificate {} ({e}): give the private key that \
                 belongs to that certificate",
                cert_pem.display()
            ),
        }
    })
}

impl TlsServerOptions {
    /// The rustls server configuration these files describe.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TransportError> {
        Ok(self.server_tls()?.config)
    }

    /// The rustls server configuration these files describe, with the revocation lists.
    pub fn server_tls(&self) -> Result<ServerTls, TransportError> {
        let provider = provider();
        let certificate = Arc::new(ReloadingCertificate::new(
            &self.cert_pem,
            &self.key_pem,
            provider.clone(),
        )?);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::TlsOptions(e.to_string()))?;
        let mut revocation = None;
        let builder = match &self.client_ca_pem {
            None if !self.client_crl_pem.is_empty() => {
                return Err(TransportError::TlsOptions(
                    "revocation lists apply to client certificates: give the CA that signs \
                     them too (--tls-client-ca)"
                        .into(),
                ))
            }
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(roots(ca)?);
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                        .build()
                        .map_err(|e| TransportError::TlsConfig {
                            path: ca.clone(),
                            reason: e.to_string(),
                        })?;
                if self.client_crl_pem.is_empty() {
                    builder.with_client_cert_verifier(verifier)
                } else {
                    let checked = Arc::new(RevocationChecked::new(
                        verifier,
                        roots,
                        provider,
                        &self.client_crl_pem,
                    )?);
                    revocation = Some(checked.clone());
                    builder.with_client_cert_verifier(checked)
                }
            }
        };
        let config = builder.with_cert_resolver(certificate.clone());
        Ok(ServerTls {
            config: Arc::new(config),
            certificate,
            revocation,
        })
    }

    /// An acceptor for server-side handshakes.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TransportError> {
        Ok(TlsAcceptor::from(self.server_config()?))
    }
}

impl TlsClientOptions {
    /// The rustls client configuration these options describe.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TransportError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::TlsOptions(e.to_string()))?;
        let builder = if self.danger_accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider)))
        } else {
            let roots = match &self.ca_pem {
                Some(ca) => roots(ca)?,
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&self.client_cert_pem, &self.client_key_pem) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key_path)) => builder
                .with_client_auth_cert(certs(cert)?, key(key_path)?)
                .map_err(|e| TransportError::TlsConfig {
                    path: key_path.clone(),
                    reason: format!("the key does not fit the client certificate: {e}"),
                })?,
            _ => {
                return Err(TransportError::TlsOptions(
                    "a client certificate needs both its certificate and its key file".into(),
                ))
            }
        };
        Ok(Arc::new(config))
    }

    /// A connector for client-side handshakes.
    pub fn connector(&self) -> Result<TlsConnector, TransportError> {
        Ok(TlsConnector::from(self.client_config()?))
    }
}

/// The name the server's certificate must carry: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TransportError> {
    ServerName::try_from(host.to_owned()).map_err(|e| TransportError::InvalidUrl {
        url: host.to_owned(),
        reason: format!("not a valid TLS server name: {e}"),
    })
}

/// Client certificates checked against revocation lists (CRLs) that are read again when
/// they change, so that revoking a lost device's certificate takes effect without restarting
/// the server: at its next connection, and for a session it has open, within
/// [`TLS_FILES_CHECK_INTERVAL_MS`] ([`ServerTls::watch_files`] looks at the
/// files; each open session's certificate is judged again when they changed, see
/// [`RevocationChecked::recheck`]). Each handshake looks at the files' size, modification
/// time and inode (a `stat` each, negligible beside the handshake's signatures); a changed
/// file is parsed again before the certificate is judged.
///
/// Only the client's own certificate is looked up (intermediates are not), and a list must
/// cover it: a certificate of an issuer none of the lists is from is refused, as is every
/// client while a list cannot be read or parsed (replace a list by writing a new file and
/// renaming it over the old one, never in place). Failing closed is the point: a list given
/// is a promise that what it revokes stays out, and "could not read it" must not turn into
/// "let everyone in". A list past its `nextUpdate` is still applied (a CA that is late
/// publishing should not lock every device out).
#[derive(Debug)]
pub struct RevocationChecked {
    /// The CA check without revocation: hints, handshake signatures and schemes (which
    /// revocation does not change).
    plain: Arc<dyn ClientCertVerifier>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    paths: Vec<PathBuf>,
    loaded: std::sync::Mutex<LoadedLists>,
    /// Moves each time the lists were read again into a usable verifier: open sessions
    /// judge their certificates again.
    generation: watch::Sender<u64>,
}

#[derive(Debug)]
struct LoadedLists {
    /// What each file looked like when read (`None`: it could not be looked at).
    stamps: Vec<Option<FileStamp>>,
    /// The verifier with those lists, or why there is none.
    verifier: Result<Arc<dyn ClientCertVerifier>, String>,
}

/// What each of `paths` looks like now.
fn stamps(paths: &[PathBuf]) -> Vec<Option<FileStamp>> {
    paths.iter().map(|p| file_stamp(p)).collect()
}

/// A verifier of client certificates from `roots` that refuses those on the lists in
/// `paths`, as the files hold them now; on failure, the file and why.
fn with_lists(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    paths: &[PathBuf],
) -> Result<Arc<dyn ClientCertVerifier>, (PathBuf, String)> {
    let mut crls = Vec::new();
    for path in paths {
        let bad = |reason: String| (path.clone(), reason);
        let before = crls.len();
        for crl in CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| bad(format!("cannot read the revocation list: {e}")))?
        {
            crls.push(crl.map_err(|e| bad(format!("not a PEM revocation list file: {e}")))?);
        }
        if crls.len() == before {
            return Err(bad(
                "no X509 CRL block in the file: give the certificate revocation list \
                 (PEM, `-----BEGIN X509 CRL-----`) of the CA that signs client certificates"
                    .into(),
            ));
        }
    }
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| {
            (
                paths[0].clone(),
                format!("the revocation lists cannot be used with the client CA: {e}"),
            )
        })
}

impl RevocationChecked {
    /// Read the lists now: a server does not start with one it cannot use.
    fn new(
        plain: Arc<dyn ClientCertVerifier>,
        roots: Arc<RootCertStore>,
        provider: Arc<CryptoProvider>,
        paths: &[PathBuf],
    ) -> Result<RevocationChecked, TransportError> {
        let stamps = stamps(paths);
        let verifier = with_lists(&roots, &provider, paths)
            .map_err(|(path, reason)| TransportError::TlsConfig { path, reason })?;
        Ok(RevocationChecked {
            plain,
            roots,
            provider,
            paths: paths.to_vec(),
            loaded: std::sync::Mutex::new(LoadedLists {
                stamps,
                verifier: Ok(verifier),
            }),
            generation: watch::Sender::new(0),
        })
    }

    /// Read the lists again if a file changed; whether they can be used now (why not).
    pub fn refresh(&self) -> Result<(), String> {
        self.current().map(|_| ()).map_err(|e| match e {
            rustls::Error::General(m) => m,
            other => other.to_string(),
        })
    }

    /// The session of a client that presented `chain` (its certificate first), judged again
    /// each time the lists were read again, and once at the start. A certificate the lists
    /// now revoke (or can no longer vouch for: none of them is from its issuer) ends the
    /// session with `AUTH_FAILED`, the client told why. It is judged as of now, the session's
    /// start: a certificate expiring during a session is not this check's business (its
    /// next connection is refused, and retried until it is renewed). While the lists cannot be read no open session is ended: each was
    /// admitted under lists that could, and a list caught half-written must not cut every
    /// client off (new connections are refused meanwhile; sessions are judged again once
    /// the lists can be read). `None` for an empty chain.
    pub fn recheck(self: &Arc<Self>, chain: &[CertificateDer<'_>]) -> Option<CredentialRecheck> {
        let chain: Vec<CertificateDer<'static>> =
            chain.iter().map(|c| c.clone().into_owned()).collect();
        if chain.is_empty() {
            return None;
        }
        let this = self.clone();
        let admitted = UnixTime::now();
        let mut changes = self.generation.subscribe();
        changes.mark_changed();
        Some(CredentialRecheck::new(changes, move || {
            let verifier = {
                let loaded = this.loaded.lock().unwrap_or_else(|e| e.into_inner());
                match &loaded.verifier {
                    Ok(v) => v.clone(),
                    Err(_) => return Ok(()),
                }
            };
            let (end_entity, intermediates) = chain.split_first().expect("not empty");
            verifier
                .verify_client_cert(end_entity, intermediates, admitted)
                .map(|_| ())
                .map_err(|e| no_longer_accepted(&e))
        }))
    }

    /// The verifier for the lists as they are now, read again if a file changed.
    fn current(&self) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        let stamps = stamps(&self.paths);
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.stamps != stamps {
            let rebuilt = with_lists(&self.roots, &self.provider, &self.paths);
            loaded.verifier = rebuilt.map_err(|(path, reason)| {
                format!(
                    "{}: {reason}; every client certificate is refused until the list can be \
                     read",
                    path.display()
                )
            });
            loaded.stamps = stamps;
            if loaded.verifier.is_ok() {
                self.generation.send_modify(|g| *g += 1);
            }
        }
        loaded.verifier.clone().map_err(rustls::Error::General)
    }
}

impl ClientCertVerifier for RevocationChecked {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.plain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()?
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.plain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.plain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.plain.supported_verify_schemes()
    }
}

/// What a client whose open session ends on its certificate is told.
fn no_longer_accepted(e: &rustls::Error) -> String {
    use rustls::CertificateError;
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Revoked) => {
            "the server revoked this client's TLS certificate (it is on the server's revocation \
             list now): the session ends; ask the server's operator for a new certificate"
                .into()
        }
        other => format!(
            "the server no longer accepts this client's TLS certificate ({other}): the session \
             ends; ask the server's operator for a new certificate"
        ),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bad = |reason: String| TransportError::TlsConfig {
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(bad(
            "no CERTIFICATE block in the file: give the PEM certificate (chain), not its key"
                .into(),
        ));
    }
    Ok(chain)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TransportError::TlsConfig {
        path: path.to_path_buf(),
        reason: format!(
            "no usable PEM private key ({e}): give the key file (a `PRIVATE KEY` block), not \
             the certificate"
        ),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TransportError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| TransportError::TlsConfig {
            path: path.to_path_buf(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

/// `danger_accept_invalid_certs`: any certificate is accepted, but the handshake signatures
/// are still checked, so the session keys belong to whoever holds the presented key.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, KeyIdMethod,
        KeyPair, RevokedCertParams, SerialNumber,
    };

    use super::*;

    /// A session judges its certificate once at its start, against the lists as they are
    /// then (they may have been read again between its handshake and its start), and again
    /// whenever they are read again: revoked → refused, with words saying so.
    #[test]
    fn a_session_judges_its_certificate_at_its_start_and_at_each_change() {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = |serial: u8| {
            let mut params = CertificateParams::new(vec!["device.test".to_owned()]).unwrap();
            params.serial_number = Some(SerialNumber::from_slice(&[serial]));
            let key = KeyPair::generate().unwrap();
            params.signed_by(&key, &ca, &ca_key).unwrap().der().clone()
        };
        let crl = |number: u8, revoked: &[u8]| {
            CertificateRevocationListParams {
                this_update: rcgen::date_time_ymd(2026, 1, 1),
                next_update: rcgen::date_time_ymd(2100, 1, 1),
                crl_number: SerialNumber::from_slice(&[number]),
                issuing_distribution_point: None,
                revoked_certs: revoked
                    .iter()
                    .map(|s| RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&[*s]),
                        revocation_time: rcgen::date_time_ymd(2026, 1, 1),
                        reason_code: None,
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: KeyIdMethod::Sha256,
            }
            .signed_by(&ca, &ca_key)
            .unwrap()
            .pem()
            .unwrap()
        };
        let list = dir.path().join("ca.crl.pem");
        std::fs::write(&list, crl(1, &[])).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let (roots, provider) = (Arc::new(roots), provider());
        let plain = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        let checked = Arc::new(
            RevocationChecked::new(plain, roots, provider, std::slice::from_ref(&list)).unwrap(),
        );

        let (kept, lost) = (leaf(2), leaf(3));
        let mut kept = checked.recheck(&[kept]).unwrap();
        let mut lost = checked.recheck(&[lost]).unwrap();
        assert!(checked.recheck(&[]).is_none());
        for r in [&mut kept, &mut lost] {
            assert!(r.changes.has_changed().unwrap(), "judged at the start");
            r.changes.borrow_and_update();
            assert_eq!((r.check)(), Ok(()));
        }

        // Read again: the lost device's certificate is revoked now.
        let tmp = dir.path().join("new.pem");
        std::fs::write(&tmp, crl(2, &[3])).unwrap();
        std::fs::rename(&tmp, &list).unwrap();
        assert_eq!(checked.refresh(), Ok(()));
        assert!(kept.changes.has_changed().unwrap());
        assert_eq!((kept.check)(), Ok(()));
        assert!(lost.changes.has_changed().unwrap());
        let refused = (lost.check)().unwrap_err();
        assert!(
            refused.contains("revoked this client's TLS certificate"),
            "{refused}"
        );

        // A list that cannot be read ends nobody's session, and is no change to judge; nor
        // is looking again at a file that did not change.
        kept.changes.borrow_and_update();
        std::fs::write(&list, "not a list").unwrap();
        assert!(checked.refresh().unwrap_err().contains("ca.crl.pem"));
        assert!(checked.refresh().is_err());
        assert!(!kept.changes.has_changed().unwrap());
        assert_eq!((kept.check)(), Ok(()), "judged by the last usable lists");
    }
}
