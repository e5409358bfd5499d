//! TLS listeners: `--listen tls:HOST:PORT,cert=FILE,key=FILE[,client-ca=FILE]`.
//!
//! With `client-ca`, a client must show a certificate signed by that CA,
//! or the handshake fails and it gets nothing; its certificate's subject,
//! written most specific first (`CN=alice,O=example`), is its identity:
//! the policy file's `[[client]]` entries choose its policy by it, and the
//! audit log names it. Without `client-ca`, clients need no certificate and
//! have no identity.

use qmp_client::transport::tls::{read_certs, read_key, rustls};
use rustls::pki_types::CertificateDer;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener's files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsListen {
    /// The proxy's certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The CA that clients' certificates must chain to; `None`: clients
    /// need none.
    pub client_ca: Option<PathBuf>,
}

impl TlsListen {
    /// The acceptor these files make.
    pub(crate) fn acceptor(&self) -> io::Result<TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca, "client CA")? {
                    roots
                        .add(cert)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(read_certs(&self.cert, "certificate")?, read_key(&self.key)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Runs the handshake of an accepted client; gives the stream and the
/// client's identity (if it showed a certificate).
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> io::Result<(tokio_rustls::server::TlsStream<TcpStream>, Option<String>)> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(subject);
    Ok((stream, identity))
}

/// A certificate's subject, most specific part first, as RFC 4514 writes
/// it: `CN=alice,O=example`. Attributes without a short name appear as
/// their OID; values that are not text as `?`.
pub fn subject(cert: &CertificateDer<'_>) -> String {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return "?".into();
    };
    let registry = oid_registry();
    let rdns: Vec<_> = cert.subject().iter_rdn().collect();
    rdns.iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let name = oid2abbrev(attr.attr_type(), registry)
                        .map(str::to_owned)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    format!("{name}={}", attr.as_str().unwrap_or("?"))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}
