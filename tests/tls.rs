//! TLS end to end on real sockets, with certificates made by rcgen: HTTPS
//! over HTTP/1.1 and HTTP/2 (ALPN) with `X-Forwarded-Proto: https`; SNI
//! picks the certificate (exact, wildcard, default for unknown names and
//! IP connects); replacing certificate files reloads without dropping an
//! open HTTP/2 connection; a mismatched key is refused by name; mutual TLS;
//! upstream TLS with a private CA, a wrong CA (502), `insecure_skip_verify`,
//! HTTP/2 over TLS, `sni:`, and health probes over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

// ---- certificates ----

/// A test CA that issues leaf certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A PEM certificate and key.
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (IP strings become IP SANs) with `serial`.
    fn issue(&self, names: &[&str], serial: u64) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn write(dir: &Path, name: &str, data: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Replaces a file by rename, as deploy tools do.
fn replace(path: &Path, data: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---- backends ----

/// What a backend saw, echoed in its response body.
async fn echo(
    req: Request<Incoming>,
    hits: Arc<AtomicUsize>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::Relaxed);
    let proto = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let body = format!("proto={proto} version={:?}", req.version());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

/// A backend serving HTTP/1.1 and h2c, or TLS with ALPN h2/http1.1.
async fn backend(tls: Option<&Leaf>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let acceptor = tls.map(|leaf| {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs(&leaf.cert), key(&leaf.key))
        .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let h = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let hits = Arc::clone(&h);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| echo(req, Arc::clone(&hits)));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                }
            });
        }
    });
    Backend { addr, hits }
}

// ---- clients ----

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Accepts any server certificate (to inspect which one was sent).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config: verifying against `ca` (or accepting anything), with
/// `alpn` and an optional client certificate.
fn client(ca: Option<&str>, alpn: &[&str], identity: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap();
    let builder = match ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca) {
                roots.add(c).unwrap();
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny)),
    };
    let mut cfg = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(certs(&leaf.cert), key(&leaf.key))
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// Connects with SNI `name` (an IP sends no SNI).
async fn connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The serial number of the certificate the server presented.
fn peer_serial(s: &TlsStream<TcpStream>) -> u64 {
    let chain = s.get_ref().1.peer_certificates().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
    cert.raw_serial()
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Serial seen by a new handshake with SNI `name`.
async fn serial_for(addr: SocketAddr, name: &str) -> u64 {
    let s = connect(addr, name, client(None, &["http/1.1"], None))
        .await
        .unwrap();
    peer_serial(&s)
}

/// One HTTP/1.1 GET on a fresh TLS connection.
async fn get_h1(
    stream: TlsStream<TcpStream>,
    path: &str,
) -> Result<(StatusCode, String), hyper::Error> {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "app.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

type H2 = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

async fn h2(stream: TlsStream<TcpStream>) -> H2 {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

async fn get_h2(send: &mut H2, path: &str) -> Result<(StatusCode, Version, String), hyper::Error> {
    let req = Request::get(format!("https://app.test{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await?;
    let (status, version) = (res.status(), res.version());
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
}

/// Plain HTTP/1.1 GET through weir (cleartext listener).
async fn get_plain(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "app.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        if f().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---- weir configs ----

/// A config with one TLS listener `tls` in front of `backend`; `tls_block`
/// is the YAML under `tls:` (indented by the caller).
fn tls_config(tls_block: &str, backend: SocketAddr) -> String {
    format!(
        "listeners:
  - name: tls
    bind: \"127.0.0.1:0\"
    tls:
{tls_block}
admin:
  bind: \"127.0.0.1:0\"
access_log:
  enabled: false
routes:
  - pool: app
pools:
  - name: app
    endpoints:
      - address: \"{backend}\"
"
    )
}

async fn start(dir: &Path, yaml: &str) -> (weir::Weir, PathBuf) {
    let path = write(dir, "weir.yaml", yaml);
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    (weir, path)
}

// ---- tests ----

#[tokio::test]
async fn https_http1_and_http2_with_forwarded_proto() {
    let ca = Ca::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.issue(&["app.test"], 11);
    write(dir.path(), "app.crt", &leaf.cert);
    write(dir.path(), "app.key", &leaf.key);
    let up = backend(None).await;
    let yaml = tls_config(
        "      certificates:\n        - cert: app.crt\n          key: app.key\n",
        up.addr,
    );
    let (weir, _) = start(dir.path(), &yaml).await;
    let addr = weir.listener_addr("tls").unwrap();

    // HTTP/1.1, verified against the CA.
    let s = connect(
        addr,
        "app.test",
        client(Some(&ca.pem()), &["http/1.1"], None),
    )
    .await
    .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get_h1(s, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("proto=https"), "{body}");

    // HTTP/2 through ALPN.
    let s = connect(
        addr,
        "app.test",
        client(Some(&ca.pem()), &["h2", "http/1.1"], None),
    )
    .await
    .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut send = h2(s).await;
    let (status, version, body) = get_h2(&mut send, "/").await.unwrap();
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    assert!(body.contains("proto=https"), "{body}");

    let metrics = String::from_utf8(weir.shared().metrics.encode()).unwrap();
    assert!(
        metrics.contains("weir_tls_handshakes_total{listener=\"tls\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "weir_tls_certificate_expiry_timestamp_seconds{listener=\"tls\",name=\"app.test\"}"
        ),
        "{metrics}"
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn sni_selects_the_certificate() {
    let ca = Ca::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    for (tag, names, serial) in [
        ("default", &["default.test", "127.0.0.1"][..], 1),
        ("a", &["a.test"][..], 2),
        ("wild", &["*.b.test"][..], 3),
        ("over", &["ignored.test"][..], 4),
    ] {
        let leaf = ca.issue(names, serial);
        write(dir.path(), &format!("{tag}.crt"), &leaf.cert);
        write(dir.path(), &format!("{tag}.key"), &leaf.key);
    }
    let up = backend(None).await;
    let yaml = tls_config(
        "      certificates:
        - {cert: default.crt, key: default.key}
        - {cert: a.crt, key: a.key}
        - {cert: wild.crt, key: wild.key}
        - {cert: over.crt, key: over.key, server_names: [c.test]}
",
        up.addr,
    );
    let (weir, _) = start(dir.path(), &yaml).await;
    let addr = weir.listener_addr("tls").unwrap();
    assert_eq!(serial_for(addr, "a.test").await, 2);
    assert_eq!(serial_for(addr, "x.b.test").await, 3);
    assert_eq!(serial_for(addr, "c.test").await, 4);
    assert_eq!(serial_for(addr, "ignored.test").await, 1);
    assert_eq!(serial_for(addr, "unknown.test").await, 1);
    // An IP server name sends no SNI: the default, which verifies by its IP SAN.
    let s = connect(addr, "127.0.0.1", client(Some(&ca.pem()), &[], None))
        .await
        .unwrap();
    assert_eq!(peer_serial(&s), 1);
    let (status, _) = get_h1(s, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    weir.shutdown().await;
}

#[tokio::test]
async fn replacing_certificate_files_reloads_in_place() {
    let ca = Ca::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir(&certs_dir).unwrap();
    let first = ca.issue(&["app.test"], 100);
    let cert_path = write(&certs_dir, "app.crt", &first.cert);
    let key_path = write(&certs_dir, "app.key", &first.key);
    let up = backend(None).await;
    // The certificates live in a directory of their own, which the
    // watcher must watch too.
    let yaml = tls_config(
        "      certificates:\n        - cert: certs/app.crt\n          key: certs/app.key\n",
        up.addr,
    );
    let (weir, _) = start(dir.path(), &yaml).await;
    let addr = weir.listener_addr("tls").unwrap();
    let hash_before = weir.shared().snapshot().config.hash.clone();

    // An HTTP/2 connection opened before the swap.
    let s = connect(addr, "app.test", client(Some(&ca.pem()), &["h2"], None))
        .await
        .unwrap();
    assert_eq!(peer_serial(&s), 100);
    let mut old_conn = h2(s).await;
    assert_eq!(get_h2(&mut old_conn, "/").await.unwrap().0, StatusCode::OK);

    // A key that does not match the certificate is refused, by key path.
    let stranger = ca.issue(&["app.test"], 999);
    replace(&key_path, &stranger.key);
    let err = weir.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("listeners[0].tls.certificates[0].key") && err.contains("does not match"),
        "{err}"
    );
    assert_eq!(serial_for(addr, "app.test").await, 100);
    assert_eq!(weir.shared().snapshot().config.hash, hash_before);

    // A good pair: the watcher reloads, and new handshakes see it.
    let second = ca.issue(&["app.test"], 200);
    replace(&key_path, &second.key);
    replace(&cert_path, &second.cert);
    eventually("the new certificate", || async {
        serial_for(addr, "app.test").await == 200
    })
    .await;
    assert_eq!(
        weir.listener_addr("tls"),
        Some(addr),
        "listener was rebound"
    );
    assert_ne!(weir.shared().snapshot().config.hash, hash_before);

    // The connection from before the swap still works.
    let (status, version, _) = get_h2(&mut old_conn, "/").await.unwrap();
    assert_eq!((status, version), (StatusCode::OK, Version::HTTP_2));
    weir.shutdown().await;
}

#[tokio::test]
async fn client_certificates_are_required() {
    let ca = Ca::new("server ca");
    let client_ca = Ca::new("client ca");
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.issue(&["app.test"], 5);
    write(dir.path(), "app.crt", &leaf.cert);
    write(dir.path(), "app.key", &leaf.key);
    write(dir.path(), "clients.pem", &client_ca.pem());
    let up = backend(None).await;
    let yaml = tls_config(
        "      certificates: [{cert: app.crt, key: app.key}]\n      client_ca: clients.pem\n      client_auth: required\n",
        up.addr,
    );
    let (weir, _) = start(dir.path(), &yaml).await;
    let addr = weir.listener_addr("tls").unwrap();

    // Without a certificate: refused (in TLS 1.3 the client learns it on
    // its first read).
    let refused = match connect(addr, "app.test", client(Some(&ca.pem()), &[], None)).await {
        Err(_) => true,
        Ok(s) => get_h1(s, "/").await.is_err(),
    };
    assert!(refused, "a client without a certificate got through");

    // A certificate from another CA: refused too.
    let other = Ca::new("other").issue(&["client"], 7);
    let refused = match connect(addr, "app.test", client(Some(&ca.pem()), &[], Some(&other))).await
    {
        Err(_) => true,
        Ok(s) => get_h1(s, "/").await.is_err(),
    };
    assert!(refused, "a client with an unknown CA got through");

    let good = client_ca.issue(&["client"], 8);
    let s = connect(addr, "app.test", client(Some(&ca.pem()), &[], Some(&good)))
        .await
        .unwrap();
    let (status, _) = get_h1(s, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);

    eventually("failure metrics", || async {
        let m = String::from_utf8(weir.shared().metrics.encode()).unwrap();
        m.contains(
            "weir_tls_handshake_failures_total{listener=\"tls\",reason=\"no_certificate\"} 1",
        ) && m.contains(
            "weir_tls_handshake_failures_total{listener=\"tls\",reason=\"bad_certificate\"} 1",
        )
    })
    .await;
    weir.shutdown().await;
}

/// Captures log output of the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Single-threaded runtime: every task runs on this thread, so the
// thread-local log subscriber sees weir's log lines.
#[tokio::test(flavor = "current_thread")]
async fn upstream_tls() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ca = Ca::new("backend ca");
    let wrong = Ca::new("wrong ca");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &ca.pem());
    write(dir.path(), "wrong.pem", &wrong.pem());
    let leaf = ca.issue(&["backend.test", "127.0.0.1"], 77);
    let up = backend(Some(&leaf)).await;
    let probed = backend(Some(&leaf)).await;
    let probed_wrong = backend(Some(&leaf)).await;
    let (a, p, pw) = (up.addr, probed.addr, probed_wrong.addr);
    let probe = "    health:\n      active: {path: /health, interval: 50ms, healthy_threshold: 1, unhealthy_threshold: 1}\n";
    let yaml = format!(
        "listeners:
  - name: plain
    bind: \"127.0.0.1:0\"
admin:
  bind: \"127.0.0.1:0\"
access_log:
  enabled: false
routes:
  - {{path_prefix: /ok, pool: ok}}
  - {{path_prefix: /wrong, pool: wrong}}
  - {{path_prefix: /insecure, pool: insecure}}
  - {{path_prefix: /h2, pool: h2}}
  - {{path_prefix: /sni, pool: sni}}
  - {{path_prefix: /badsni, pool: badsni}}
  - {{path_prefix: /probed-ok, pool: probed}}
  - {{path_prefix: /probed-wrong, pool: probed_wrong}}
pools:
  - name: ok
    endpoints: [{{address: \"{a}\"}}]
    tls: {{ca: ca.pem}}
  - name: wrong
    endpoints: [{{address: \"{a}\"}}]
    tls: {{ca: wrong.pem}}
  - name: insecure
    endpoints: [{{address: \"{a}\"}}]
    tls: {{ca: wrong.pem, insecure_skip_verify: true}}
  - name: h2
    protocol: h2c
    endpoints: [{{address: \"{a}\"}}]
    tls: {{ca: ca.pem}}
  - name: sni
    endpoints: [{{address: \"{a}\"}}]
    tls: {{ca: ca.pem, sni: backend.test}}
  - name: badsni
    endpoints: [{{address: \"{a}\"}}]
    tls: {{ca: ca.pem, sni: other.test}}
  - name: probed
    endpoints: [{{address: \"{p}\"}}]
    tls: {{ca: ca.pem}}
{probe}  - name: probed_wrong
    endpoints: [{{address: \"{pw}\"}}]
    tls: {{ca: wrong.pem}}
{probe}"
    );
    let (weir, _) = start(dir.path(), &yaml).await;
    let addr = weir.listener_addr("plain").unwrap();

    let (status, body) = get_plain(addr, "/ok").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("HTTP/1.1") && body.contains("proto=http"),
        "{body}"
    );

    let (status, body) = get_plain(addr, "/h2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("HTTP/2"), "{body}");

    assert_eq!(get_plain(addr, "/sni").await.0, StatusCode::OK);
    assert_eq!(get_plain(addr, "/insecure").await.0, StatusCode::OK);

    assert_eq!(get_plain(addr, "/wrong").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(get_plain(addr, "/badsni").await.0, StatusCode::BAD_GATEWAY);
    let text = logs.text();
    assert!(
        text.contains("upstream TLS handshake failed") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(
        text.contains("insecure_skip_verify"),
        "no startup warning: {text}"
    );

    // Probes run over TLS with the pool's settings: the right CA keeps the
    // endpoint up (and the probe reached it), the wrong one takes it out.
    eventually("a TLS probe to reach the backend", || async {
        probed.hits.load(Ordering::Relaxed) > 0
    })
    .await;
    assert_eq!(get_plain(addr, "/probed-ok").await.0, StatusCode::OK);
    eventually("the wrong-CA endpoint to be marked down", || async {
        get_plain(addr, "/probed-wrong").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(probed_wrong.hits.load(Ordering::Relaxed), 0);
    weir.shutdown().await;
}

#[test]
fn config_errors_name_the_key() {
    let ca = Ca::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let one = ca.issue(&["one.test"], 1);
    let two = ca.issue(&["two.test"], 2);
    write(dir.path(), "one.crt", &one.cert);
    write(dir.path(), "one.key", &one.key);
    write(dir.path(), "two.crt", &two.cert);
    write(dir.path(), "junk.pem", "hello\n");
    let check = |block: &str| {
        let yaml = tls_config(block, "127.0.0.1:9".parse().unwrap());
        let path = write(dir.path(), "weir.yaml", &yaml);
        weir::Config::load(&path)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let e = check("      certificates:\n        - {cert: one.crt, key: one.key}\n        - {cert: two.crt, key: one.key}\n");
    assert!(
        e.contains("listeners[0].tls.certificates[1].key") && e.contains("does not match"),
        "{e}"
    );
    assert!(e.contains("line 7"), "{e}");
    let e = check("      certificates: [{cert: missing.crt, key: one.key}]\n");
    assert!(
        e.contains("listeners[0].tls.certificates[0].cert") && e.contains("missing.crt"),
        "{e}"
    );
    let e = check("      certificates: [{cert: junk.pem, key: one.key}]\n");
    assert!(e.contains("no certificate found"), "{e}");
    let e = check("      certificates: [{cert: one.crt, key: junk.pem}]\n");
    assert!(
        e.contains("certificates[0].key") && e.contains("no private key"),
        "{e}"
    );
    let e = check("      certificates: [{cert: one.crt, key: one.key}]\n      min_version: 1.1\n");
    assert!(e.contains("listeners[0].tls.min_version"), "{e}");
    let e =
        check("      certificates: [{cert: one.crt, key: one.key}]\n      client_auth: optional\n");
    assert!(e.contains("needs `client_ca`"), "{e}");
    // Unquoted and quoted versions both parse.
    let yaml = tls_config(
        "      certificates: [{cert: one.crt, key: one.key}]\n      min_version: 1.3\n      handshake_timeout: 3s\n      alpn: [http/1.1]\n",
        "127.0.0.1:9".parse().unwrap(),
    );
    let path = write(dir.path(), "weir.yaml", &yaml);
    let config = weir::Config::load(&path).unwrap();
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.min_version, weir::config::TlsVersion::Tls13);
    assert_eq!(tls.handshake_timeout, Duration::from_secs(3));
    assert_eq!(tls.alpn, ["http/1.1"]);
    assert!(config.warnings().is_empty());
}

#[tokio::test]
async fn slow_handshakes_time_out() {
    use tokio::io::AsyncReadExt;
    let ca = Ca::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.issue(&["app.test"], 3);
    write(dir.path(), "app.crt", &leaf.cert);
    write(dir.path(), "app.key", &leaf.key);
    let up = backend(None).await;
    let yaml = tls_config(
        "      certificates: [{cert: app.crt, key: app.key}]\n      handshake_timeout: 200ms\n",
        up.addr,
    );
    let (weir, _) = start(dir.path(), &yaml).await;
    let addr = weir.listener_addr("tls").unwrap();
    // Connect and say nothing: weir closes the connection.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("connection not closed after the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    eventually("the timeout to be counted", || async {
        let m = String::from_utf8(weir.shared().metrics.encode()).unwrap();
        m.contains("weir_tls_handshake_failures_total{listener=\"tls\",reason=\"timeout\"} 1")
    })
    .await;
    weir.shutdown().await;
}

#[test]
fn check_warns_about_expired_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["old.test".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    write(dir.path(), "old.crt", &cert.pem());
    write(dir.path(), "old.key", &key.serialize_pem());
    let yaml = tls_config(
        "      certificates: [{cert: old.crt, key: old.key}]\n",
        "127.0.0.1:9".parse().unwrap(),
    );
    let path = write(dir.path(), "weir.yaml", &yaml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning") && stdout.contains("old.crt") && stdout.contains("expired"),
        "{stdout}"
    );
}

/// An HTTPS endpoint that requires a client certificate (TLS 1.3 only).
/// weir presents none: under TLS 1.3 the endpoint's `certificate_required`
/// alert arrives after the handshake completed on weir's side.
async fn mtls_backend(leaf: &Leaf, client_ca: &Ca) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs(&client_ca.pem()));
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&leaf.cert), key(&leaf.key))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(stream).await;
            });
        }
    });
    addr
}

/// An endpoint that rejects weir's missing client certificate after a TLS
/// 1.3 handshake: the client gets 502, and the log names it a TLS failure
/// with the alert's reason, not a bare connection error.
#[tokio::test]
async fn a_client_certificate_rejected_after_the_handshake_is_named() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let ca = Ca::new("backend ca");
    let clients = Ca::new("client ca");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &ca.pem());
    let up = mtls_backend(&ca.issue(&["127.0.0.1"], 91), &clients).await;
    let yaml = format!(
        "listeners:\n  - name: plain\n    bind: \"127.0.0.1:0\"\nadmin:\n  bind: \"127.0.0.1:0\"\naccess_log:\n  enabled: false\nroutes:\n  - pool: mtls\npools:\n  - name: mtls\n    endpoints: [{{address: \"{up}\"}}]\n    tls: {{ca: ca.pem}}\n"
    );
    let (weir, _) = start(dir.path(), &yaml).await;
    let addr = weir.listener_addr("plain").unwrap();
    assert_eq!(get_plain(addr, "/").await.0, StatusCode::BAD_GATEWAY);
    let text = logs.text();
    assert!(
        text.contains("upstream TLS handshake failed") && text.contains("CertificateRequired"),
        "{text}"
    );
    weir.shutdown().await;
}
