//! TLS to upstream endpoints (a pool's `tls:` block).
//!
//! A pool with `tls:` wraps every upstream connection, and every active
//! health probe, in a rustls client session (ring provider, installed per
//! config; see `crate::tls` for why ring).
//!
//! # Trust
//!
//! Without `ca:`, server certificates are verified against the Mozilla root
//! program bundled in the binary (webpki-roots), not the host's CA files:
//! weir then behaves the same on every machine, including a distroless
//! image that has no CA files at all. A private CA is configured with
//! `ca:` (a PEM bundle), which replaces the bundled roots for that pool.
//! `insecure_skip_verify: true` accepts any certificate (the handshake
//! signature is still checked, so the peer must hold the key of the
//! certificate it shows); it is logged as a warning at every startup and
//! reload.
//!
//! # Server name
//!
//! The name sent in SNI and checked against the certificate is `sni:` when
//! set, otherwise the endpoint's IP address (rustls accepts IP server
//! names; the certificate then needs a matching IP subjectAltName). The
//! request's `Host` is deliberately not used: one pooled connection carries
//! requests for many hosts.
//!
//! # ALPN
//!
//! `protocol: http1` offers `http/1.1`; `protocol: h2c` with `tls:` means
//! HTTP/2 over TLS and offers `h2`. Health probes speak HTTP/1.1 and offer
//! no ALPN at all, which every server answers with HTTP/1.1.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{self as stls, fail, Material};

/// A pool's validated `tls:` block with its ready-to-use client configs.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Server name to send and verify; `None` = the endpoint's IP.
    pub sni: Option<String>,
    /// CA bundle replacing the bundled roots.
    pub ca: Option<PathBuf>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Client certificate chain for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// ALPN protocol offered on request connections.
    pub alpn: &'static str,
    material: Vec<Material>,
    requests: Arc<rustls::ClientConfig>,
    probes: Arc<rustls::ClientConfig>,
}

impl PartialEq for UpstreamTls {
    // The client configs are derived from the rest.
    fn eq(&self, other: &Self) -> bool {
        self.sni == other.sni
            && self.ca == other.ca
            && self.insecure_skip_verify == other.insecure_skip_verify
            && self.client_cert == other.client_cert
            && self.client_key == other.client_key
            && self.alpn == other.alpn
            && self.material == other.material
    }
}

impl Eq for UpstreamTls {}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("ca", &self.ca)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("alpn", &self.alpn)
            .finish_non_exhaustive()
    }
}

/// A pool's `tls:` block as written, paths resolved.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTlsSource {
    /// `sni:`.
    pub sni: Option<String>,
    /// `ca:`.
    pub ca: Option<PathBuf>,
    /// `insecure_skip_verify:`.
    pub insecure_skip_verify: bool,
    /// `client_cert:`.
    pub client_cert: Option<PathBuf>,
    /// `client_key:`.
    pub client_key: Option<PathBuf>,
}

/// The application protocol request connections offer by ALPN (probes
/// offer none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`, for `protocol: http1` pools.
    Http11,
    /// `h2`, for HTTP/2 pools (`protocol: h2c` with `tls:`).
    H2,
}

/// Loads the files of a pool's `tls:` block and builds its client configs.
/// Errors name the key below `tls` (`ca`, `client_key`, ...).
pub fn load_upstream_tls(
    src: UpstreamTlsSource,
    protocol: Alpn,
) -> Result<UpstreamTls, stls::TlsConfigError> {
    let provider = stls::provider();
    if let Some(sni) = &src.sni {
        if ServerName::try_from(sni.as_str()).is_err() || sni.contains('*') {
            return Err(fail(
                "sni",
                format!("`{sni}` is not a DNS name or IP address"),
            ));
        }
    }
    let mut material = Vec::new();
    let roots = match &src.ca {
        Some(path) => {
            let (roots, pem) = stls::load_roots(path).map_err(|m| fail("ca", m))?;
            material.push(pem);
            roots
        }
        None => stls::public_roots(),
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("", e.to_string()))?;
    let builder = if src.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(Arc::clone(&provider))))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = with_client_auth(builder, &src, &provider, &mut material)?;
    let alpn = match protocol {
        Alpn::Http11 => "http/1.1",
        Alpn::H2 => "h2",
    };
    let probes = Arc::new(config.clone());
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Ok(UpstreamTls {
        sni: src.sni,
        ca: src.ca,
        insecure_skip_verify: src.insecure_skip_verify,
        client_cert: src.client_cert,
        client_key: src.client_key,
        alpn,
        material: material.into_iter().map(Material::from).collect(),
        requests: Arc::new(config),
        probes,
    })
}

/// Finishes a client config with the pool's client certificate, if it has
/// one (`client_cert:` and `client_key:` go together), checked as listener
/// certificates are; the files' bytes are appended to `material`.
fn with_client_auth(
    builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    src: &UpstreamTlsSource,
    provider: &CryptoProvider,
    material: &mut Vec<Vec<u8>>,
) -> Result<rustls::ClientConfig, stls::TlsConfigError> {
    let (cert_path, key_path) = match (&src.client_cert, &src.client_key) {
        (None, None) => return Ok(builder.with_no_client_auth()),
        (Some(_), None) => return Err(fail("client_key", "`client_cert` needs `client_key`")),
        (None, Some(_)) => return Err(fail("client_cert", "`client_key` needs `client_cert`")),
        (Some(cert), Some(key)) => (cert, key),
    };
    let cert_pem = stls::read_file(cert_path).map_err(|m| fail("client_cert", m))?;
    let key_pem = stls::read_file(key_path).map_err(|m| fail("client_key", m))?;
    let chain = stls::parse_certs(cert_path, &cert_pem).map_err(|m| fail("client_cert", m))?;
    let key = stls::parse_key(key_path, &key_pem).map_err(|m| fail("client_key", m))?;
    // Same checks as listener certificates, for the same errors.
    stls::certified_key(
        chain.clone(),
        key.clone_key(),
        cert_path,
        key_path,
        provider,
    )
    .map_err(|(on_key, m)| fail(if on_key { "client_key" } else { "client_cert" }, m))?;
    material.push(cert_pem);
    material.push(key_pem);
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| fail("client_key", format!("{}: {e}", key_path.display())))
}

impl UpstreamTls {
    /// Every file this block was loaded from (to watch for changes).
    pub fn files(&self) -> Vec<&Path> {
        [&self.ca, &self.client_cert, &self.client_key]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect()
    }

    /// The bytes of every file, in a fixed order (for the config hash).
    pub fn material(&self) -> Vec<&[u8]> {
        self.material.iter().map(Material::bytes).collect()
    }

    fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        match self
            .sni
            .as_deref()
            .and_then(|s| ServerName::try_from(s.to_string()).ok())
        {
            Some(n) => n,
            None => ServerName::IpAddress(addr.ip().into()),
        }
    }

    /// Runs the client handshake on `stream` for a request connection
    /// (`probe: false`, ALPN per protocol) or a health probe (no ALPN).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        stream: TcpStream,
        probe: bool,
    ) -> io::Result<TlsStream<TcpStream>> {
        let config = if probe { &self.probes } else { &self.requests };
        tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(self.server_name(addr), stream)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake failed: {e}")))
    }
}

/// Accepts any server certificate but still checks handshake signatures
/// (`insecure_skip_verify`).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
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

/// An upstream connection: plain TCP or TLS over TCP.
#[derive(Debug)]
pub enum MaybeTls {
    /// Cleartext.
    Plain(TcpStream),
    /// TLS (boxed: the session state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS alert an endpoint sent, when `e` is one. Under TLS 1.3 an
/// endpoint that rejects weir's client certificate (or its absence) sends
/// its alert after the handshake has completed on weir's side, so it
/// surfaces on the first read of the response, not in the handshake.
pub fn received_alert(e: &io::Error) -> Option<rustls::AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}
