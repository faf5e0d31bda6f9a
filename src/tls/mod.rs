//! TLS material and configs: PEM files, listener (server) configs with
//! SNI, and upstream (client) configs with the `MaybeTls` connector.
//!
//! A leaf module: it depends on no other part of weir, so `config` can
//! build validated TLS configs while it loads a file, and the traffic
//! listeners (`server`), upstream connections (`upstream`) and active
//! probes (`probe`) all use the same types.
//!
//! # Crypto provider
//!
//! weir uses rustls with the **ring** provider, installed explicitly in every
//! config it builds (`ServerConfig::builder_with_provider`) rather than
//! through rustls' process-wide default, so no other crate in the process can
//! change which primitives a listener uses. ring rather than aws-lc-rs:
//! aws-lc-sys needs cmake and a long C build on every clean CI run, while
//! ring builds with nothing but a C compiler (`cc`).
//!
//! # Loading
//!
//! Certificate, key and CA files are read and parsed while the config is
//! validated ([`listener::load_listener_tls`], called from `config::validate`), so
//! `weir check`, startup and hot reload reject exactly the same problems —
//! a missing file, a file without PEM blocks, a key that does not match its
//! certificate — with the key path of the offending value
//! (`listeners[0].tls.certificates[1].key`). An expired certificate is only
//! a warning ([`listener::ListenerTls::warnings`]): refusing to start would turn an
//! expired certificate into a full outage, and clients decide for
//! themselves. The file bytes stay in the validated config, so replacing a
//! certificate on disk makes the new config unequal to the running one and
//! changes its content hash; that is how a certificate rotation becomes a
//! reload.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub mod listener;
pub mod upstream;

/// The ring provider, the only one weir uses (see the module docs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// File contents kept in the validated config: compared for equality and
/// hashed, never printed (they may be private keys).
#[derive(Clone, PartialEq, Eq)]
pub struct Material(Arc<[u8]>);

impl Material {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Material {
    fn from(bytes: Vec<u8>) -> Self {
        Material(bytes.into())
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// A TLS config problem: the key below `tls` it is about
/// (`certificates[1].key`) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfigError {
    /// Key path relative to the `tls:` block.
    pub field: String,
    /// Message for the operator.
    pub message: String,
}

pub(crate) fn fail(field: impl Into<String>, message: impl Into<String>) -> TlsConfigError {
    TlsConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// Reads a file named in the config.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Parses every `CERTIFICATE` block of a PEM file.
pub(crate) fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found (expected a PEM block `-----BEGIN CERTIFICATE-----`)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub(crate) fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "{}: no private key found (expected a PEM block such as \
             `-----BEGIN PRIVATE KEY-----`)",
            path.display()
        ),
        e => format!("{}: bad PEM: {e}", path.display()),
    })
}

/// Pairs a chain with its key: the key must parse (RSA, ECDSA or Ed25519)
/// and its public half must be the one in the leaf certificate.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, (bool, String)> {
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        (
            true,
            format!(
                "{}: unusable private key ({e}); RSA, ECDSA (P-256, P-384) and Ed25519 keys \
                 are supported",
                key_path.display()
            ),
        )
    })?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err((
            true,
            format!(
                "the private key in {} does not match the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
        )),
        Err(e) => Err((
            false,
            format!("{}: invalid certificate: {e}", cert_path.display()),
        )),
    }
}

/// Reads a PEM bundle of CA certificates into a root store.
pub(crate) fn load_roots(path: &Path) -> Result<(RootCertStore, Vec<u8>), String> {
    let pem = read_file(path)?;
    let roots = roots_from_pem(path, &pem)?;
    Ok((roots, pem))
}

/// The root store of a PEM bundle already read from `path`.
fn roots_from_pem(path: &Path, pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs(path, pem)? {
        roots
            .add(c)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The bundled Mozilla roots (webpki-roots): the same on every machine.
pub(crate) fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// A client config for HTTP/1.1 over TLS to a service weir asks on its
/// own behalf (a JWKS server, an auth service): server certificates
/// checked against `ca` (a bundle's path and bytes, read at config load)
/// or the public roots; no client certificate.
pub fn http1_client_config(
    ca: Option<(&Path, &[u8])>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = match ca {
        Some((path, pem)) => roots_from_pem(path, pem)?,
        None => public_roots(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
