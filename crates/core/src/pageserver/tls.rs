//! CRIU's `--tls` for the page server, with rustls (ring): both ends present an X.509 certificate
//! and verify the peer's against the trusted CAs, so a page server only takes images from dumps
//! it can authenticate and a dump only sends memory to a server it can.
//!
//! Facts (criu/tls.c and criu(8) of CRIU 4.1.1), kept here so that `criu dump --tls` and `criu
//! page-server --tls` interoperate with tsdump in both directions:
//! - Defaults: CA /etc/pki/CA/cacert.pem, CRL /etc/pki/CA/cacrl.pem, certificate
//!   /etc/pki/criu/cert.pem, key /etc/pki/criu/private/key.pem, all PEM.
//! - `--tls-cacert` given: only that file is trusted and it must hold a certificate. Not given:
//!   the system's trusted CAs plus the default CA file if present.
//! - `--tls-cacrl` given: it must be readable. Not given: the default CRL is used if readable.
//!   A CRL revokes only what it lists (certificates of a CA without a CRL pass).
//! - Both ends always present their certificate; the server requires the client's and does not
//!   list its CAs to the client.
//! - Name check, unless `--tls-no-cn-verify`: the client checks that the server's certificate
//!   names the `--address` it connected to; the server checks that the client's certificate
//!   names the server's own `--address`, when one was given (CRIU's deployments share one
//!   certificate per host pair). tsdump skips that server-side check for a wildcard address
//!   (0.0.0.0, ::), which no certificate names. Names are matched against subjectAltName.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::{Error, ErrorCode, Result};

pub const DEFAULT_CACERT: &str = "/etc/pki/CA/cacert.pem";
pub const DEFAULT_CACRL: &str = "/etc/pki/CA/cacrl.pem";
pub const DEFAULT_CERT: &str = "/etc/pki/criu/cert.pem";
pub const DEFAULT_KEY: &str = "/etc/pki/criu/private/key.pem";

/// `--tls` and its options; None paths take CRIU's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub cacert: Option<PathBuf>,
    pub cacrl: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `--tls-no-cn-verify`: the peer's certificate need not name the address.
    pub no_cn_verify: bool,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ImageIo, format!("TLS: {what}"))
}

/// ring: small, fast to build and cross-compiles with a plain C cross compiler. rustls 0.23.48
/// deprecated its constructor for lacking post-quantum key exchange, which CRIU's GnuTLS peers
/// do not offer either.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|e| bad(format_args!("reading the {what} {}: {e}", path.display())))
}

fn certs_in(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    CertificateDer::pem_slice_iter(&pem).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| bad(format_args!("the {what} {}: {e}", path.display())))
}

/// The CAs a peer's certificate must chain to.
fn roots(o: &TlsOptions) -> Result<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    match &o.cacert {
        Some(path) => {
            let certs = certs_in(path, "CA certificate file")?;
            if certs.is_empty() {
                return Err(bad(format_args!("no certificate in the CA file {}", path.display())));
            }
            for c in certs {
                store.add(c).map_err(|e| bad(format_args!("the CA certificate in {}: {e}", path.display())))?;
            }
        }
        None => {
            // Unreadable entries of the system store are skipped, as GnuTLS does.
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if Path::new(DEFAULT_CACERT).exists() {
                store.add_parsable_certificates(certs_in(Path::new(DEFAULT_CACERT), "CA certificate file")?);
            }
            if store.is_empty() {
                return Err(bad(format_args!("no trusted CA certificate (no system CAs and no {DEFAULT_CACERT}): give --tls-cacert")));
            }
        }
    }
    Ok(Arc::new(store))
}

fn crls(o: &TlsOptions) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let path = match &o.cacrl {
        Some(p) => p.clone(),
        None if fs::File::open(DEFAULT_CACRL).is_ok() => PathBuf::from(DEFAULT_CACRL),
        None => return Ok(Vec::new()),
    };
    let pem = read(&path, "certificate revocation list")?;
    CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format_args!("the certificate revocation list {}: {e}", path.display())))
}

/// Our certificate chain and its key.
fn identity(o: &TlsOptions) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert = o.cert.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CERT));
    let key = o.key.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_KEY));
    let chain = certs_in(&cert, "certificate")?;
    if chain.is_empty() {
        return Err(bad(format_args!("no certificate in {}", cert.display())));
    }
    let pem = read(&key, "private key")?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(format_args!("the private key {}: {e}", key.display())))?;
    Ok((chain, key))
}

fn server_name(address: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(address.to_string()).map_err(|e| bad(format_args!("{address:?} is not an address or host name a certificate can name: {e}")))
}

/// The client's configuration for a page server at `address` and the name its certificate must carry.
pub fn client_config(o: &TlsOptions, address: &str) -> Result<(Arc<ClientConfig>, ServerName<'static>)> {
    let webpki = WebPkiServerVerifier::builder_with_provider(roots(o)?, provider())
        .with_crls(crls(o)?)
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| bad(format_args!("building the certificate verifier: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if o.no_cn_verify { Arc::new(AnyName(webpki)) } else { webpki };
    let (chain, key) = identity(o)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(format_args!("our certificate and key: {e}")))?;
    Ok((Arc::new(config), server_name(address)?))
}

/// The server's configuration; `address` is the one it was told to listen on (None: CRIU's default).
pub fn server_config(o: &TlsOptions, address: Option<&str>) -> Result<Arc<ServerConfig>> {
    let webpki = WebPkiClientVerifier::builder_with_provider(roots(o)?, provider())
        .with_crls(crls(o)?)
        .allow_unknown_revocation_status()
        .clear_root_hint_subjects()
        .build()
        .map_err(|e| bad(format_args!("building the certificate verifier: {e}")))?;
    let wildcard = |a: &str| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    let verifier: Arc<dyn ClientCertVerifier> = match address {
        Some(a) if !o.no_cn_verify && !wildcard(a) => Arc::new(NamedClient { inner: webpki, name: server_name(a)? }),
        _ => webpki,
    };
    let (chain, key) = identity(o)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| bad(format_args!("our certificate and key: {e}")))?;
    // No TLS 1.3 session tickets: CRIU's client reads with gnutls_record_recv and takes the
    // GNUTLS_E_AGAIN it returns after processing a ticket for a dead server. Every page-server
    // connection is a full handshake anyway.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// `--tls-no-cn-verify` on the client: the whole webpki verification but the name.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the name last, after the chain, validity and revocation: a name error
        // means everything else passed.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            r => r,
        }
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// CRIU's server-side name check: the client's certificate must name the server's `--address`.
#[derive(Debug)]
struct NamedClient {
    inner: Arc<dyn ClientCertVerifier>,
    name: ServerName<'static>,
}

impl ClientCertVerifier for NamedClient {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>], now: UnixTime) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let ok = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        rustls::client::verify_server_name(&ParsedCertificate::try_from(end_entity)?, &self.name)?;
        Ok(ok)
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
