//! TLS for `tls://` (and `wss://`): rustls with the `ring` provider, configured from PEM
//! files.
//!
//! - Server: a certificate chain and its key; optionally a CA whose certificates clients
//!   must present ([`TlsServerOptions::client_ca_pem`]).
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
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

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

impl TlsServerOptions {
    /// The rustls server configuration these files describe.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TransportError> {
        let provider = provider();
        let chain = certs(&self.cert_pem)?;
        let key = key(&self.key_pem)?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::TlsOptions(e.to_string()))?;
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let roots = Arc::new(roots(ca)?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TransportError::TlsConfig {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config =
            builder
                .with_single_cert(chain, key)
                .map_err(|e| TransportError::TlsConfig {
                    path: self.key_pem.clone(),
                    reason: format!(
                        "this key cannot serve the certificate {} ({e}): give the private \
                         key that belongs to that certificate",
                        self.cert_pem.display()
                    ),
                })?;
        Ok(Arc::new(config))
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
