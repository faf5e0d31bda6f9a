//! The `jwt` middleware against a live weir: RS256 and ES256 tokens from
//! keys generated here, a JWKS served by a test server that rotates keys
//! and goes down, every refusal reason (status, `WWW-Authenticate`,
//! metric), claims copied to upstream fields, HS256 with a secret file,
//! and a reload that keeps (or drops) the key cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A JWKS server on `127.0.0.1:0`: serves `doc`, counts fetches, and can
/// be shut down (its port then refuses connections).
struct Jwks {
    addr: SocketAddr,
    doc: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Jwks {
    async fn serve(keys: &[&Value]) -> Jwks {
        Jwks::serve_with(keys, None).await
    }

    /// [`Jwks::serve`] over TLS with `acceptor`, when given.
    async fn serve_with(keys: &[&Value], acceptor: Option<tokio_rustls::TlsAcceptor>) -> Jwks {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new(json!({ "keys": keys })));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (Arc::clone(&doc), Arc::clone(&hits));
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (d, h) = (Arc::clone(&d), Arc::clone(&h));
                let service = service_fn(move |_req: Request<Incoming>| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap().to_string();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                    }
                });
            }
        });
        Jwks {
            addr,
            doc,
            hits,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn https_url(&self) -> String {
        format!("https://{}/jwks.json", self.addr)
    }

    fn set(&self, keys: &[&Value]) {
        *self.doc.lock().unwrap() = json!({ "keys": keys });
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops every connection (the JoinSet with it).
    async fn shut_down(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A signing key and its public JWK.
struct Signer {
    alg: Algorithm,
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One 2048-bit RSA key per test binary (generating one takes a while).
fn rsa_der() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let der = key.to_pkcs1_der().unwrap().as_bytes().to_vec();
        (der, key.n().to_bytes_be(), key.e().to_bytes_be())
    })
}

fn rs256(kid: &str) -> Signer {
    let (der, n, e) = rsa_der();
    Signer {
        alg: Algorithm::RS256,
        kid: kid.into(),
        key: EncodingKey::from_rsa_der(der),
        jwk: json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(n), "e": b64(e)}),
    }
}

fn es256(kid: &str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    Signer {
        alg: Algorithm::ES256,
        kid: kid.into(),
        key: EncodingKey::from_ec_der(&kp.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims that pass the config of [`config`].
fn claims() -> Value {
    json!({"sub": "alice", "email": "alice@example.com", "iss": "https://idp.test",
        "aud": "api", "exp": now() + 300, "scope": "read write"})
}

/// Listener, admin, one route over `backend` through middleware `auth`
/// with the given `jwt:` body (indented 6 spaces).
fn config(backend: SocketAddr, jwt: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
         admin:\n  bind: \"127.0.0.1:0\"\n\
         access_log:\n  enabled: false\n\
         middleware:\n  - name: auth\n    jwt:\n{jwt}\
         routes:\n  - name: api\n    pool: p\n    middleware: [auth]\n\
         pools:\n  - name: p\n    endpoints:\n      - address: \"{backend}\"\n"
    )
}

fn jwks_config(backend: SocketAddr, url: &str, extra: &str) -> String {
    config(
        backend,
        &format!(
            "      jwks_url: \"{url}\"\n      issuer: https://idp.test\n      audience: [api, web]\n\
             {extra}"
        ),
    )
}

/// GET / with `Authorization: Bearer <token>` (if any) and extra fields.
async fn call(
    weir: &weir::Weir,
    token: Option<&str>,
    extra: &[(&str, &str)],
) -> (http::response::Parts, Bytes) {
    let mut req = get(weir.listener_addr("main").unwrap(), "api.test", "/");
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    for (k, v) in extra {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    send(&client(), req).await
}

async fn status(weir: &weir::Weir, token: &str) -> StatusCode {
    call(weir, Some(token), &[]).await.0.status
}

fn challenge(parts: &http::response::Parts) -> String {
    parts
        .headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn rejections(weir: &weir::Weir, reason: &str) -> f64 {
    let s = scrape(weir).await;
    sample(
        &s,
        "weir_middleware_rejections_total",
        &[("route", "api"), ("middleware", "auth"), ("reason", reason)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn rs256_and_es256_tokens_pass_and_claims_reach_the_upstream_unspoofed() {
    let backend = echo_backend("b").await;
    let (rsa, ec) = (rs256("rsa-1"), es256("ec-1"));
    let jwks = Jwks::serve(&[&rsa.jwk, &ec.jwk]).await;
    let extra = "      claims_to_headers: {sub: X-User, email: X-Email}\n";
    let weir = start(&jwks_config(backend.addr, &jwks.url(), extra)).await;

    let token = rsa.sign(&claims());
    let (parts, _) = call(&weir, Some(&token), &[("x-user", "mallory")]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = backend.requests().pop().unwrap();
    let users: Vec<_> = seen.headers.get_all("x-user").iter().collect();
    assert_eq!(
        users,
        ["alice"],
        "the client's X-User is replaced by the claim"
    );
    assert_eq!(seen.headers["x-email"], "alice@example.com");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {token}").as_str(),
        "strip_token defaults to false"
    );

    // A token without `email`: a client-sent X-Email is removed, not passed.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("email");
    let (parts, _) = call(&weir, Some(&ec.sign(&c)), &[("x-email", "root@evil")]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = backend.requests().pop().unwrap();
    assert!(seen.headers.get("x-email").is_none(), "{:?}", seen.headers);
    assert_eq!(seen.headers["x-user"], "alice");
    assert_eq!(backend.count(), 2);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason_challenge_and_metric() {
    let backend = echo_backend("b").await;
    let ec = es256("ec-1");
    let jwks = Jwks::serve(&[&ec.jwk]).await;
    let extra = "      required_claims: {scope: read}\n      realm: my api\n";
    let weir = start(&jwks_config(backend.addr, &jwks.url(), extra)).await;
    assert_eq!(status(&weir, &ec.sign(&claims())).await, StatusCode::OK);

    let (parts, _) = call(&weir, None, &[]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&parts), "Bearer realm=\"my api\"");
    let (parts, _) = call(&weir, None, &[("authorization", "Basic YTpi")]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims();
        f(&mut c);
        ec.sign(&c)
    };
    let cases = [
        ("garbage", "not.a.jwt".to_owned(), "invalid_token"),
        (
            "expired",
            with(&|c| c["exp"] = json!(now() - 120)),
            "expired",
        ),
        (
            "nbf",
            with(&|c| c["nbf"] = json!(now() + 120)),
            "not_yet_valid",
        ),
        (
            "aud",
            with(&|c| c["aud"] = json!("billing")),
            "wrong_audience",
        ),
        (
            "iss",
            with(&|c| c["iss"] = json!("https://evil")),
            "wrong_issuer",
        ),
        ("kid", es256("ec-9").sign(&claims()), "unknown_kid"),
        ("forged", es256("ec-1").sign(&claims()), "invalid_token"),
    ];
    for (what, token, reason) in &cases {
        let before = rejections(&weir, reason).await;
        let (parts, _) = call(&weir, Some(token), &[]).await;
        assert_eq!(
            rejections(&weir, reason).await,
            before + 1.0,
            "{what}: {reason}"
        );
        assert_eq!(parts.status, StatusCode::UNAUTHORIZED, "{what}");
        let ch = challenge(&parts);
        assert!(
            ch.starts_with(
                "Bearer realm=\"my api\", error=\"invalid_token\", error_description=\""
            ),
            "{what}: {ch}"
        );
    }
    let (parts, _) = call(&weir, Some(&with(&|c| c["scope"] = json!("write"))), &[]).await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    assert!(challenge(&parts).contains("error=\"insufficient_scope\""));

    assert_eq!(
        backend.count(),
        1,
        "no refused request reached the upstream"
    );
    for (reason, n) in [
        ("missing_token", 2.0),
        ("invalid_token", 2.0),
        ("expired", 1.0),
        ("not_yet_valid", 1.0),
        ("wrong_audience", 1.0),
        ("wrong_issuer", 1.0),
        ("unknown_kid", 1.0),
        ("missing_claim", 1.0),
    ] {
        assert_eq!(rejections(&weir, reason).await, n, "{reason}");
    }
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_window() {
    let backend = echo_backend("b").await;
    let ec = es256("ec-1");
    let jwks = Jwks::serve(&[&ec.jwk]).await;
    let weir = start(&jwks_config(backend.addr, &jwks.url(), "")).await;
    assert_eq!(status(&weir, &ec.sign(&claims())).await, StatusCode::OK);
    assert_eq!(jwks.hits(), 1, "fetched once at start");
    // A key is added; a burst of tokens under it: one refetch, which the
    // requests that miss while it is under way wait for too.
    let next = es256("ec-2");
    jwks.set(&[&ec.jwk, &next.jwk]);
    let token = next.sign(&claims());
    let burst = (0..6).map(|_| status(&weir, &token));
    for s in futures_util::future::join_all(burst).await {
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(jwks.hits(), 2, "one refetch for the burst");
    // Within the window, unknown kids are refused without a fetch.
    for kid in ["x1", "x2", "x3", "x4"] {
        let s = status(&weir, &es256(kid).sign(&claims())).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(jwks.hits(), 2, "no refetch again within the window");
    assert_eq!(rejections(&weir, "unknown_kid").await, 4.0);
}

#[tokio::test]
async fn rotated_keys_are_picked_up_and_dropped_ones_refused() {
    let backend = echo_backend("b").await;
    let (old, new) = (rs256("rsa-old"), es256("ec-new"));
    let jwks = Jwks::serve(&[&old.jwk]).await;
    let extra = "      refresh_interval: 1s\n";
    let weir = start(&jwks_config(backend.addr, &jwks.url(), extra)).await;
    let (old_token, new_token) = (old.sign(&claims()), new.sign(&claims()));
    assert_eq!(status(&weir, &old_token).await, StatusCode::OK);

    // The IdP publishes its next key: a token signed by it verifies at
    // once (the unknown kid refetches the set).
    jwks.set(&[&old.jwk, &new.jwk]);
    assert_eq!(status(&weir, &new_token).await, StatusCode::OK);
    assert_eq!(status(&weir, &old_token).await, StatusCode::OK);

    // Then retires the old one: the next refresh drops it.
    jwks.set(&[&new.jwk]);
    let mut dropped = false;
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < end {
        if status(&weir, &old_token).await == StatusCode::UNAUTHORIZED {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped, "the retired key is refused after a refresh");
    assert_eq!(status(&weir, &new_token).await, StatusCode::OK);
    assert!(rejections(&weir, "unknown_kid").await >= 1.0);
}

#[tokio::test]
async fn the_last_good_keys_keep_serving_while_the_jwks_server_is_down() {
    let backend = echo_backend("b").await;
    let ec = es256("ec-1");
    let jwks = Jwks::serve(&[&ec.jwk]).await;
    let weir = start(&jwks_config(
        backend.addr,
        &jwks.url(),
        "      refresh_interval: 1s\n",
    ))
    .await;
    let token = ec.sign(&claims());
    assert_eq!(status(&weir, &token).await, StatusCode::OK);
    jwks.shut_down().await;
    // An unknown kid makes the request wait for a refetch, which fails.
    assert_eq!(
        status(&weir, &es256("ec-2").sign(&claims())).await,
        StatusCode::UNAUTHORIZED
    );
    // The keys fetched before are still used, across failing refreshes.
    let end = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < end {
        assert_eq!(status(&weir, &token).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_any_key_set_requests_get_503_never_a_pass() {
    let backend = echo_backend("b").await;
    let dead = dead_addr().await;
    let url = format!("http://{dead}/jwks.json");
    let weir = start(&jwks_config(
        backend.addr,
        &url,
        "      fetch_timeout: 1s\n",
    ))
    .await;
    let (parts, _) = call(&weir, Some(&es256("ec-1").sign(&claims())), &[]).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.count(), 0);
    assert_eq!(rejections(&weir, "keys_unavailable").await, 1.0);
    // A missing token is still a 401: no keys are needed to say so.
    assert_eq!(
        call(&weir, None, &[]).await.0.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_reload_keeps_the_key_cache_of_an_unchanged_jwt_and_drops_a_changed_ones() {
    let backend = echo_backend("b").await;
    let ec = es256("ec-1");
    let jwks = Jwks::serve(&[&ec.jwk]).await;
    let url = jwks.url();
    let weir = start(&jwks_config(backend.addr, &url, "")).await;
    let token = ec.sign(&claims());
    assert_eq!(status(&weir, &token).await, StatusCode::OK);
    let keys = |w: &weir::Weir| {
        let snap = w.shared().snapshot_full();
        Arc::clone(snap.middleware.get("auth").unwrap().jwt().unwrap().keys())
    };
    let before = keys(&weir);
    jwks.shut_down().await;

    // Another part of the config changes; `auth` does not.
    let other = jwks_config(backend.addr, &url, "").replace(
        "access_log:\n  enabled: false\n",
        "access_log:\n  enabled: false\ntrusted_proxies: [10.0.0.0/8]\n",
    );
    weir.apply(weir::Config::from_yaml(&other, "t.yaml").unwrap())
        .await
        .unwrap();
    assert!(
        Arc::ptr_eq(&before, &keys(&weir)),
        "the instance and its cache are kept"
    );
    assert_eq!(
        status(&weir, &token).await,
        StatusCode::OK,
        "cached keys, server down"
    );

    // `auth` itself changes: a fresh instance, whose first fetch fails.
    let changed = jwks_config(
        backend.addr,
        &url,
        "      leeway: 5s\n      fetch_timeout: 1s\n",
    );
    weir.apply(weir::Config::from_yaml(&changed, "t.yaml").unwrap())
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&before, &keys(&weir)));
    assert_eq!(status(&weir, &token).await, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn hs256_secret_file_with_a_cookie_token_stripped_before_forwarding() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let secret = "k7Hq2v9sX0pLr4mN8bT1wZ6yC3dF5gJa";
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let jwt = format!(
        "      secret_file: \"{}\"\n      token: {{cookie: session}}\n      strip_token: true\n",
        path.display()
    );
    let text = config(backend.addr, &jwt);
    let cfg = weir::Config::from_yaml(&text, "t.yaml").unwrap();
    assert!(
        cfg.watched_files().contains(&path.as_path()),
        "the secret is watched"
    );
    let weir = weir::Weir::start(cfg).await.unwrap();

    let sign = |key: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    let good = format!("theme=dark; session={}", sign(secret.as_bytes()));
    let (parts, _) = call(&weir, None, &[("cookie", &good)]).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = backend.requests().pop().unwrap();
    assert_eq!(
        seen.headers["cookie"], "theme=dark",
        "only the token cookie is removed"
    );

    let bad = format!("session={}", sign(b"another secret of the same length!"));
    let (parts, _) = call(&weir, None, &[("cookie", &bad)]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    // Bearer is not where this middleware looks.
    let (parts, _) = call(&weir, Some(&sign(secret.as_bytes())), &[]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(rejections(&weir, "missing_token").await, 1.0);
    assert_eq!(rejections(&weir, "invalid_token").await, 1.0);

    // A new secret is a new config version.
    std::fs::write(&path, "Zx9cV8bN7mQ6wE5rT4yU3iO2pA1sD0fG\n").unwrap();
    let again = weir::Config::from_yaml(&text, "t.yaml").unwrap();
    assert_ne!(again.hash, weir.shared().snapshot().config.hash);
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let b: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let err = |jwt: &str| {
        weir::Config::from_yaml(&config(b, jwt), "t.yaml")
            .unwrap_err()
            .to_string()
    };
    let warned = |jwt: &str| {
        weir::Config::from_yaml(&config(b, jwt), "t.yaml")
            .unwrap()
            .warnings()
            .join("\n")
    };
    let w = warned("      jwks_url: http://idp.example/k\n");
    assert!(
        w.contains("middleware[0].jwt (`auth`): jwks_url is plain http://"),
        "{w}"
    );
    assert!(w.contains("no `audience`"), "{w}");
    assert_eq!(
        warned("      jwks_url: http://127.0.0.1:9/k\n      audience: api\n"),
        ""
    );
    assert_eq!(
        warned("      jwks_url: https://idp.example/k\n      audience: api\n"),
        ""
    );
    let e = err("      jwks_url: http://idp/k\n      secret_file: /s\n");
    assert!(
        e.contains("middleware[0].jwt") && e.contains("not both"),
        "{e}"
    );
    let e = err("      audience: api\n");
    assert!(e.contains("jwks_url"), "{e}");
    let e = err("      jwks_url: ftp://idp/k\n");
    assert!(e.contains("middleware[0].jwt.jwks_url"), "{e}");
    let e = err("      jwks_url: http://idp/k\n      algorithms: [HS256]\n");
    assert!(
        e.contains("jwt.algorithms[0]") && e.contains("forge"),
        "{e}"
    );
    let e = err("      jwks_url: http://idp/k\n      algorithms: [XX1]\n");
    assert!(e.contains("unknown algorithm"), "{e}");
    let e = err("      jwks_url: http://idp/k\n      token: {header: X-T, cookie: c}\n");
    assert!(e.contains("jwt.token"), "{e}");
    let e = err("      jwks_url: http://idp/k\n      claims_to_headers: {sub: Host}\n");
    assert!(e.contains("claims_to_headers.sub"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "tooshort\n").unwrap();
    let e = err(&format!("      secret_file: \"{}\"\n", short.display()));
    assert!(
        e.contains("jwt.secret_file") && e.contains("at least 32"),
        "{e}"
    );
    let e = err("      jwks_url: http://idp/k\n      jwks_ca: /x.pem\n");
    assert!(e.contains("jwt.jwks_ca") && e.contains("https"), "{e}");
    let e = err("      jwks_url: https://idp/k\n      jwks_ca: /nonexistent/ca.pem\n");
    assert!(
        e.contains("jwt.jwks_ca") && e.contains("cannot read"),
        "{e}"
    );
    let e = err("      secret_file: /nonexistent/weir-secret\n");
    assert!(e.contains("cannot read"), "{e}");
}

#[tokio::test]
async fn an_https_jwks_is_fetched_when_its_certificate_verifies() {
    let backend = echo_backend("b").await;
    let ec = es256("ec-1");
    let (ca_pem, acceptor) = tls_server_for_localhost();
    let jwks = Jwks::serve_with(&[&ec.jwk], Some(acceptor)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("idp-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let token = ec.sign(&claims());

    let with_ca = format!("      jwks_ca: \"{}\"\n", ca.display());
    let cfg = weir::Config::from_yaml(
        &jwks_config(backend.addr, &jwks.https_url(), &with_ca),
        "t.yaml",
    )
    .unwrap();
    assert!(
        cfg.watched_files().contains(&ca.as_path()),
        "the CA is watched"
    );
    let weir = weir::Weir::start(cfg).await.unwrap();
    assert_eq!(status(&weir, &token).await, StatusCode::OK);
    assert_eq!(jwks.hits(), 1);

    // Without `jwks_ca` the public roots do not know the test CA: no keys.
    let fetched = jwks.hits();
    let weir2 = start(&jwks_config(
        backend.addr,
        &jwks.https_url(),
        "      fetch_timeout: 2s\n",
    ))
    .await;
    assert_eq!(
        status(&weir2, &token).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        jwks.hits(),
        fetched,
        "the handshake failed before any request"
    );
}

async fn x_token(weir: &weir::Weir, token: &str) -> StatusCode {
    call(weir, None, &[("x-token", token)]).await.0.status
}

#[tokio::test]
async fn a_new_secret_is_a_new_config_that_replaces_the_key() {
    let backend = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    let (one, two) = (
        "k7Hq2v9sX0pLr4mN8bT1wZ6yC3dF5gJa",
        "Zx9cV8bN7mQ6wE5rT4yU3iO2pA1sD0fG",
    );
    std::fs::write(&path, one).unwrap();
    let text = config(
        backend.addr,
        &format!("      secret_file: \"{}\"\n      token: {{header: X-Token}}\n      strip_token: true\n", path.display()),
    );
    let weir = start(&text).await;
    let sign = |key: &str| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(x_token(&weir, &sign(one)).await, StatusCode::OK);
    assert!(
        backend
            .requests()
            .pop()
            .unwrap()
            .headers
            .get("x-token")
            .is_none(),
        "stripped"
    );

    std::fs::write(&path, two).unwrap();
    weir.apply(weir::Config::from_yaml(&text, "t.yaml").unwrap())
        .await
        .unwrap();
    assert_eq!(x_token(&weir, &sign(one)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(x_token(&weir, &sign(two)).await, StatusCode::OK);
}
