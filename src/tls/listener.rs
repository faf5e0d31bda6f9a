//! TLS on traffic listeners: certificates, SNI, ALPN, client certificates.
//!
//! # SNI
//!
//! Each certificate serves the DNS names of its subjectAltName extension
//! (the subject CN when it has none), or the names listed under
//! `server_names:`. A name is either exact (`api.example.com`) or a wildcard
//! (`*.example.com`, which covers exactly one extra label, as in RFC 6125).
//! For a ClientHello, [`SniResolver`] looks up the lower-cased server name:
//! exact names first, then the wildcard of its parent domain. When several
//! certificates carry the same name (an ECDSA and an RSA certificate for one
//! host), the first in file order whose key can sign with a scheme the
//! client offers wins. No SNI (clients connecting by IP) or an unknown name
//! gets the default certificate: the first listed.
//!
//! # Hot reload
//!
//! A running listener reads its `rustls::ServerConfig` from an `ArcSwap`
//! once per accepted connection. A reload that only changes TLS material
//! stores a new config there: the socket and every open connection (HTTP/2
//! included) stay as they are, and the next handshake uses the new
//! certificate.
//!
//! # Handshake cost
//!
//! Resumption is on: TLS 1.3 clients get stateless session tickets
//! (ring's rotating ticketer, keys changed every six hours) and TLS 1.2
//! clients get tickets or a session ID from an in-memory cache of
//! [`SESSION_CACHE_SIZE`] entries, so a returning client skips the
//! certificate exchange and signature. Ticket keys belong to one validated
//! config: a certificate change starts a fresh ticket key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::{
    certified_key, fail, load_roots, parse_certs, parse_key, provider, read_file, Material,
    TlsConfigError,
};

/// TLS 1.2 session IDs remembered for resumption, per listener config.
pub const SESSION_CACHE_SIZE: usize = 4096;

/// Default time a client has to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `reason` label values of `weir_tls_handshake_failures_total`.
pub const HANDSHAKE_FAILURE_REASONS: [&str; 6] = [
    "timeout",
    "no_certificate",
    "bad_certificate",
    "protocol",
    "io",
    "other",
];

/// Index of `timeout` in [`HANDSHAKE_FAILURE_REASONS`].
pub const FAILURE_TIMEOUT: usize = 0;

/// Lowest TLS version a listener accepts (`min_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3. Default.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Whether a client certificate is demanded (`client_auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate fail. Default.
    #[default]
    Required,
    /// A client certificate is verified if sent, but may be omitted.
    Optional,
}

/// Client-certificate authentication (`client_ca`, `client_auth`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAuthConfig {
    /// PEM bundle of the CAs that sign client certificates.
    pub ca: PathBuf,
    /// Required or optional.
    pub mode: ClientAuth,
    ca_pem: Material,
}

/// One loaded certificate of a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Certificate chain file (leaf first).
    pub cert_path: PathBuf,
    /// Private key file.
    pub key_path: PathBuf,
    /// Names this certificate answers for in SNI (lower case; `*.x` for
    /// wildcards).
    pub server_names: Vec<String>,
    /// Label in metrics and status: the first server name, or the file
    /// name when there is none; unique within the listener.
    pub label: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Serial number, hex with `:` separators.
    pub serial: String,
    cert_pem: Material,
    key_pem: Material,
}

impl CertificateInfo {
    /// Whether `not_after` has passed.
    pub fn expired(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.not_after < now
    }
}

/// A listener's validated `tls:` block, with its ready-to-use rustls config.
#[derive(Clone)]
pub struct ListenerTls {
    /// Certificates in file order; the first is the default.
    pub certificates: Vec<CertificateInfo>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<String>,
    /// Lowest accepted version.
    pub min_version: TlsVersion,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// Client-certificate authentication, if configured.
    pub client_auth: Option<ClientAuthConfig>,
    server_config: Arc<rustls::ServerConfig>,
}

impl PartialEq for ListenerTls {
    // The rustls config is derived from the rest, so it is left out (it
    // has no equality of its own).
    fn eq(&self, other: &Self) -> bool {
        self.certificates == other.certificates
            && self.alpn == other.alpn
            && self.min_version == other.min_version
            && self.handshake_timeout == other.handshake_timeout
            && self.client_auth == other.client_auth
    }
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("certificates", &self.certificates)
            .field("alpn", &self.alpn)
            .field("min_version", &self.min_version)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl ListenerTls {
    /// The rustls server config built from this block.
    pub fn server_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.server_config
    }

    /// Problems worth telling an operator that do not stop weir: expired
    /// certificates.
    pub fn warnings(&self) -> Vec<String> {
        self.certificates
            .iter()
            .filter(|c| c.expired())
            .map(|c| {
                format!(
                    "certificate {} (serial {}) expired at Unix time {}; clients will reject it",
                    c.cert_path.display(),
                    c.serial,
                    c.not_after
                )
            })
            .collect()
    }

    /// Every file this block was loaded from (to watch for changes).
    pub fn files(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        for c in &self.certificates {
            out.push(c.cert_path.as_path());
            out.push(c.key_path.as_path());
        }
        if let Some(ca) = &self.client_auth {
            out.push(ca.ca.as_path());
        }
        out
    }

    /// The bytes of every file, in a fixed order (for the config hash).
    pub fn material(&self) -> Vec<&[u8]> {
        let mut out = Vec::new();
        for c in &self.certificates {
            out.push(c.cert_pem.bytes());
            out.push(c.key_pem.bytes());
        }
        if let Some(ca) = &self.client_auth {
            out.push(ca.ca_pem.bytes());
        }
        out
    }
}

/// One `certificates:` entry, paths already resolved.
#[derive(Clone, Debug)]
pub struct CertificateSource {
    /// Chain file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// `server_names:` override.
    pub server_names: Option<Vec<String>>,
}

/// A `tls:` block as written, with paths resolved and defaults applied.
#[derive(Clone, Debug)]
pub struct ListenerTlsSource {
    /// `certificates:`.
    pub certificates: Vec<CertificateSource>,
    /// `alpn:`.
    pub alpn: Vec<String>,
    /// `min_version:`.
    pub min_version: TlsVersion,
    /// `handshake_timeout:`.
    pub handshake_timeout: Duration,
    /// `client_ca:`.
    pub client_ca: Option<PathBuf>,
    /// `client_auth:`.
    pub client_auth: ClientAuth,
}

/// Facts read from a leaf certificate.
struct LeafFacts {
    names: Vec<String>,
    not_after: i64,
    serial: String,
}

fn leaf_facts(der: &[u8]) -> Result<LeafFacts, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .filter(|cn| normalize_name(cn).is_ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok(LeafFacts {
        names,
        not_after: cert.validity().not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
    })
}

/// Normalises a server name: lower case, no trailing dot, `*.` only as a
/// whole first label.
pub(crate) fn normalize_name(name: &str) -> Result<String, String> {
    let lower = name.trim().to_ascii_lowercase();
    let n = lower.strip_suffix('.').unwrap_or(&lower);
    let base = n.strip_prefix("*.").unwrap_or(n);
    if base.is_empty()
        || base.contains('*')
        || base.split('.').any(str::is_empty)
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!(
            "`{name}` is not a server name; write a DNS name such as `api.example.com` \
             or a wildcard such as `*.example.com`"
        ));
    }
    Ok(n.to_string())
}

/// Loads and checks one certificate entry; `i` is its index for errors.
fn load_certificate(
    i: usize,
    src: &CertificateSource,
    provider: &CryptoProvider,
) -> Result<(CertificateInfo, CertifiedKey), TlsConfigError> {
    let cert_field = format!("certificates[{i}].cert");
    let key_field = format!("certificates[{i}].key");
    let cert_pem = read_file(&src.cert).map_err(|m| fail(&cert_field, m))?;
    let key_pem = read_file(&src.key).map_err(|m| fail(&key_field, m))?;
    let chain = parse_certs(&src.cert, &cert_pem).map_err(|m| fail(&cert_field, m))?;
    let key = parse_key(&src.key, &key_pem).map_err(|m| fail(&key_field, m))?;
    let leaf = chain.first().ok_or_else(|| {
        fail(
            &cert_field,
            format!("{}: no certificate found", src.cert.display()),
        )
    })?;
    let facts = leaf_facts(leaf.as_ref())
        .map_err(|m| fail(&cert_field, format!("{}: {m}", src.cert.display())))?;
    let ck = certified_key(chain, key, &src.cert, &src.key, provider).map_err(|(on_key, m)| {
        if on_key {
            fail(&key_field, m)
        } else {
            fail(&cert_field, m)
        }
    })?;
    let server_names = match &src.server_names {
        Some(list) => {
            if list.is_empty() {
                return Err(fail(
                    format!("certificates[{i}].server_names"),
                    "empty list; omit `server_names` to use the certificate's own names",
                ));
            }
            list.iter()
                .enumerate()
                .map(|(j, n)| {
                    normalize_name(n)
                        .map_err(|m| fail(format!("certificates[{i}].server_names[{j}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        None => facts
            .names
            .iter()
            .filter_map(|n| normalize_name(n).ok())
            .collect(),
    };
    let label = server_names.first().cloned().unwrap_or_else(|| {
        src.cert.file_name().map_or_else(
            || format!("certificate{i}"),
            |f| f.to_string_lossy().into_owned(),
        )
    });
    Ok((
        CertificateInfo {
            cert_path: src.cert.clone(),
            key_path: src.key.clone(),
            server_names,
            label,
            not_after: facts.not_after,
            serial: facts.serial,
            cert_pem: Material(cert_pem.into()),
            key_pem: Material(key_pem.into()),
        },
        ck,
    ))
}

/// Loads every file of a listener's `tls:` block and builds its rustls
/// server config.
pub fn load_listener_tls(src: ListenerTlsSource) -> Result<ListenerTls, TlsConfigError> {
    let provider = provider();
    if src.certificates.is_empty() {
        return Err(fail(
            "certificates",
            "at least one certificate is required, e.g. \
             `certificates: [{cert: /etc/weir/site.crt, key: /etc/weir/site.key}]`",
        ));
    }
    let mut infos: Vec<CertificateInfo> = Vec::with_capacity(src.certificates.len());
    let mut keys = Vec::with_capacity(src.certificates.len());
    for (i, c) in src.certificates.iter().enumerate() {
        let (mut info, ck) = load_certificate(i, c, &provider)?;
        // Labels name metric series, so they must be unique per listener.
        if infos.iter().any(|o| o.label == info.label) {
            info.label = format!("{}#{i}", info.label);
        }
        infos.push(info);
        keys.push(Arc::new(ck));
    }
    check_alpn(&src.alpn)?;

    let versions: &[&rustls::SupportedProtocolVersion] = match src.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| fail("min_version", e.to_string()))?;
    let (builder, client_auth) = match &src.client_ca {
        None => (builder.with_no_client_auth(), None),
        Some(path) => {
            let (roots, pem) = load_roots(path).map_err(|m| fail("client_ca", m))?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
            if src.client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| fail("client_ca", format!("{}: {e}", path.display())))?;
            (
                builder.with_client_cert_verifier(verifier),
                Some(ClientAuthConfig {
                    ca: path.clone(),
                    mode: src.client_auth,
                    ca_pem: Material(pem.into()),
                }),
            )
        }
    };
    let resolver = SniResolver::new(keys, infos.iter().map(|c| c.server_names.clone()).collect());
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = src.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| fail("", format!("cannot create the session ticket key: {e}")))?;
    Ok(ListenerTls {
        certificates: infos,
        alpn: src.alpn,
        min_version: src.min_version,
        handshake_timeout: src.handshake_timeout,
        client_auth,
        server_config: Arc::new(config),
    })
}

/// Checks the `alpn:` list: not empty, only protocols weir serves, none
/// twice.
fn check_alpn(alpn: &[String]) -> Result<(), TlsConfigError> {
    if alpn.is_empty() {
        return Err(fail(
            "alpn",
            "empty list; omit `alpn` for the default [h2, http/1.1]",
        ));
    }
    for (i, p) in alpn.iter().enumerate() {
        if p != "h2" && p != "http/1.1" {
            return Err(fail(
                format!("alpn[{i}]"),
                format!("`{p}` is not a protocol weir serves; use `h2` and/or `http/1.1`"),
            ));
        }
        if alpn.iter().take(i).any(|q| q == p) {
            return Err(fail(format!("alpn[{i}]"), format!("`{p}` is listed twice")));
        }
    }
    Ok(())
}

/// Picks a certificate by SNI; see the module docs for the rules.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, Vec<usize>>,
    /// Keyed by the parent domain: `*.example.com` → `example.com`.
    wildcard: HashMap<String, Vec<usize>>,
}

impl SniResolver {
    /// `names[i]` are the normalised server names of `certs[i]`; the first
    /// certificate is the default.
    pub fn new(certs: Vec<Arc<CertifiedKey>>, names: Vec<Vec<String>>) -> Self {
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, list) in names.into_iter().enumerate() {
            for n in list {
                let (map, key) = match n.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent.to_string()),
                    None => (&mut exact, n),
                };
                let slot = map.entry(key).or_default();
                if !slot.contains(&i) {
                    slot.push(i);
                }
            }
        }
        SniResolver {
            certs,
            exact,
            wildcard,
        }
    }

    /// Candidate certificate indexes for a server name, best first; empty
    /// when only the default applies.
    fn candidates(&self, name: &str) -> &[usize] {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(list) = self.exact.get(&name) {
            return list;
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(list) = self.wildcard.get(parent) {
                return list;
            }
        }
        &[]
    }

    /// The index of the certificate chosen for `name` (`None`: no SNI) when
    /// the client accepts any signature scheme.
    pub fn select(&self, name: Option<&str>) -> usize {
        name.and_then(|n| self.candidates(n).first().copied())
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let candidates = hello.server_name().map_or(&[][..], |n| self.candidates(n));
        let usable = |i: &usize| {
            self.certs
                .get(*i)
                .is_some_and(|c| c.key.choose_scheme(schemes).is_some())
        };
        let i = candidates
            .iter()
            .find(|i| usable(i))
            .or_else(|| candidates.first())
            .copied()
            .unwrap_or(0);
        self.certs.get(i).or_else(|| self.certs.first()).cloned()
    }
}

/// Maps a failed handshake to an index into [`HANDSHAKE_FAILURE_REASONS`].
pub fn failure_reason(e: &std::io::Error) -> usize {
    use rustls::Error as E;
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return 4;
    };
    match inner {
        E::NoCertificatesPresented => 1,
        E::InvalidCertificate(_) => 2,
        E::InappropriateMessage { .. }
        | E::InappropriateHandshakeMessage { .. }
        | E::InvalidMessage(_)
        | E::PeerIncompatible(_)
        | E::PeerMisbehaved(_)
        | E::AlertReceived(_)
        | E::NoApplicationProtocol
        | E::DecryptError
        | E::PeerSentOversizedRecord => 3,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Files {
                dir: tempfile::tempdir().unwrap(),
            }
        }
        fn write(&self, name: &str, data: &[u8]) -> PathBuf {
            let p = self.dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        }
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn source(files: &Files, certs: &[(&str, &[&str])]) -> ListenerTlsSource {
        let certificates = certs
            .iter()
            .map(|(tag, names)| {
                let (c, k) = self_signed(names);
                CertificateSource {
                    cert: files.write(&format!("{tag}.crt"), c.as_bytes()),
                    key: files.write(&format!("{tag}.key"), k.as_bytes()),
                    server_names: None,
                }
            })
            .collect();
        ListenerTlsSource {
            certificates,
            alpn: vec!["h2".into(), "http/1.1".into()],
            min_version: TlsVersion::Tls12,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            client_ca: None,
            client_auth: ClientAuth::Required,
        }
    }

    #[test]
    fn sni_exact_wildcard_default() {
        let files = Files::new();
        let tls = load_listener_tls(source(
            &files,
            &[
                ("default", &["default.test"]),
                ("a", &["a.test", "www.a.test"]),
                ("wild", &["*.b.test"]),
                ("exact-b", &["x.b.test"]),
            ],
        ))
        .unwrap();
        let names: Vec<Vec<String>> = tls
            .certificates
            .iter()
            .map(|c| c.server_names.clone())
            .collect();
        assert_eq!(names[2], ["*.b.test"]);
        let r = SniResolver::new(Vec::new(), names);
        assert_eq!(r.select(Some("a.test")), 1);
        assert_eq!(r.select(Some("WWW.A.test.")), 1);
        assert_eq!(r.select(Some("y.b.test")), 2);
        // Exact beats wildcard.
        assert_eq!(r.select(Some("x.b.test")), 3);
        // A wildcard covers one label only, not the parent itself.
        assert_eq!(r.select(Some("b.test")), 0);
        assert_eq!(r.select(Some("z.y.b.test")), 0);
        assert_eq!(r.select(Some("unknown.test")), 0);
        assert_eq!(r.select(None), 0);
    }

    #[test]
    fn server_names_override() {
        let files = Files::new();
        let mut src = source(&files, &[("a", &["a.test"])]);
        src.certificates[0].server_names = Some(vec!["Other.Test".into(), "*.w.test".into()]);
        let tls = load_listener_tls(src.clone()).unwrap();
        assert_eq!(tls.certificates[0].server_names, ["other.test", "*.w.test"]);
        assert_eq!(tls.certificates[0].label, "other.test");
        src.certificates[0].server_names = Some(vec!["a.*.test".into()]);
        let e = load_listener_tls(src).unwrap_err();
        assert_eq!(e.field, "certificates[0].server_names[0]");
    }

    #[test]
    fn missing_file() {
        let files = Files::new();
        let mut src = source(&files, &[("a", &["a.test"])]);
        src.certificates[0].key = files.dir.path().join("nope.key");
        let e = load_listener_tls(src).unwrap_err();
        assert_eq!(e.field, "certificates[0].key");
        assert!(
            e.message.contains("cannot read") && e.message.contains("nope.key"),
            "{e:?}"
        );
    }

    #[test]
    fn bad_pem() {
        let files = Files::new();
        let mut src = source(&files, &[("a", &["a.test"])]);
        src.certificates[0].cert = files.write("garbage.crt", b"not a certificate\n");
        let e = load_listener_tls(src).unwrap_err();
        assert_eq!(e.field, "certificates[0].cert");
        assert!(e.message.contains("no certificate found"), "{e:?}");

        let mut src = source(&files, &[("b", &["b.test"])]);
        src.certificates[0].key = files.write("trunc.key", b"-----BEGIN PRIVATE KEY-----\nMIIB\n");
        let e = load_listener_tls(src).unwrap_err();
        assert_eq!(e.field, "certificates[0].key");
        assert!(e.message.contains("bad PEM"), "{e:?}");
    }

    #[test]
    fn mismatched_key() {
        let files = Files::new();
        let mut src = source(&files, &[("a", &["a.test"]), ("b", &["b.test"])]);
        src.certificates[1].key = src.certificates[0].key.clone();
        let e = load_listener_tls(src).unwrap_err();
        assert_eq!(e.field, "certificates[1].key");
        assert!(e.message.contains("does not match"), "{e:?}");
    }

    #[test]
    fn alpn_checked() {
        let files = Files::new();
        let mut src = source(&files, &[("a", &["a.test"])]);
        src.alpn = vec!["h3".into()];
        assert_eq!(load_listener_tls(src).unwrap_err().field, "alpn[0]");
    }

    #[test]
    fn equality_follows_file_content() {
        let files = Files::new();
        let src = source(&files, &[("a", &["a.test"])]);
        let one = load_listener_tls(src.clone()).unwrap();
        let two = load_listener_tls(src.clone()).unwrap();
        assert_eq!(one, two);
        let (c, k) = self_signed(&["a.test"]);
        std::fs::write(&src.certificates[0].cert, c).unwrap();
        std::fs::write(&src.certificates[0].key, k).unwrap();
        let three = load_listener_tls(src).unwrap();
        assert_ne!(one, three);
        assert!(!format!("{three:?}").contains("PRIVATE"));
    }

    #[test]
    fn expired_certificate_warns() {
        let files = Files::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["old.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let src = ListenerTlsSource {
            certificates: vec![CertificateSource {
                cert: files.write("old.crt", cert.pem().as_bytes()),
                key: files.write("old.key", key.serialize_pem().as_bytes()),
                server_names: None,
            }],
            ..source(&files, &[])
        };
        let tls = load_listener_tls(src).unwrap();
        let w = tls.warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("expired") && w[0].contains("old.crt"),
            "{w:?}"
        );
    }

    #[test]
    fn failure_reasons() {
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::NoCertificatesPresented,
        );
        assert_eq!(
            HANDSHAKE_FAILURE_REASONS[failure_reason(&e)],
            "no_certificate"
        );
        let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(HANDSHAKE_FAILURE_REASONS[failure_reason(&e)], "io");
        let e = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        assert_eq!(HANDSHAKE_FAILURE_REASONS[failure_reason(&e)], "protocol");
    }
}
