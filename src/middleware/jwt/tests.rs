//! Unit tests of the pure verification (each refusal reason, key choice)
//! and of token extraction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::config::middleware::jwt::Secret;

const NOW: u64 = 1_700_000_000;

fn config(keys: KeySource, algorithms: Vec<Algorithm>) -> JwtConfig {
    JwtConfig {
        keys,
        algorithms,
        issuer: vec!["https://idp".into()],
        audience: vec!["api".into(), "other".into()],
        leeway: Duration::from_secs(60),
        refresh_interval: Duration::from_secs(600),
        fetch_timeout: Duration::from_secs(5),
        token: TokenSource::Bearer,
        required_claims: vec![("scope".into(), Some("read".into()))],
        claims_to_headers: Vec::new(),
        strip_token: false,
        realm: "r".into(),
    }
}

/// An ES256 key: its signing key and its JWK.
fn es256(kid: &str) -> (EncodingKey, serde_json::Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
    (EncodingKey::from_ec_der(&kp.serialize_der()), jwk)
}

fn ed25519(kid: &str) -> (EncodingKey, serde_json::Value) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
        "x": URL_SAFE_NO_PAD.encode(kp.public_key_raw())});
    (EncodingKey::from_ed_der(&kp.serialize_der()), jwk)
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "alice", "iss": "https://idp", "aud": ["x", "api"],
        "exp": NOW + 300, "nbf": NOW - 10, "scope": "write read"})
}

fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn jwks_verifier() -> (Verifier, KeySet, EncodingKey, EncodingKey) {
    let (es, es_jwk) = es256("ec-1");
    let (ed, ed_jwk) = ed25519("ed-1");
    let doc = json!({"keys": [es_jwk, ed_jwk,
        {"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
        {"kty": "weird"}]});
    let keys = KeySet::from_jwks(doc.to_string().as_bytes()).unwrap();
    let cfg = config(
        KeySource::Jwks {
            url: "http://idp/jwks".into(),
            ca: None,
        },
        vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
    );
    (Verifier::new(&cfg), keys, es, ed)
}

#[test]
fn jwks_skips_encryption_symmetric_and_unknown_entries() {
    let (_, keys, _, _) = jwks_verifier();
    assert_eq!(keys.len(), 2);
    assert!(keys.has_kid("ec-1") && keys.has_kid("ed-1") && !keys.has_kid("sym"));
    assert!(KeySet::from_jwks(b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"eA\"}]}").is_err());
    assert!(KeySet::from_jwks(b"not json").is_err());
    assert!(KeySet::from_jwks(b"{}").is_err());
}

#[test]
fn es256_and_eddsa_tokens_verify_and_each_failure_has_its_reason() {
    let (v, keys, es, ed) = jwks_verifier();
    let ok = sign(Algorithm::ES256, Some("ec-1"), &es, &good_claims());
    let claims = v.verify(&keys, &ok, NOW).unwrap();
    assert_eq!(claims["sub"], "alice");
    let ok_ed = sign(Algorithm::EdDSA, Some("ed-1"), &ed, &good_claims());
    assert!(v.verify(&keys, &ok_ed, NOW).is_ok());
    // Without a kid, every key of the right type is tried.
    let no_kid = sign(Algorithm::ES256, None, &es, &good_claims());
    assert!(v.verify(&keys, &no_kid, NOW).is_ok());

    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = good_claims();
        f(&mut c);
        v.verify(&keys, &sign(Algorithm::ES256, Some("ec-1"), &es, &c), NOW)
    };
    assert_eq!(with(&|c| c["exp"] = json!(NOW - 61)), Err(Reason::Expired));
    assert!(
        with(&|c| c["exp"] = json!(NOW - 59)).is_ok(),
        "within the leeway"
    );
    assert_eq!(
        with(&|c| c["nbf"] = json!(NOW + 61)),
        Err(Reason::NotYetValid)
    );
    assert!(
        with(&|c| c["nbf"] = json!(NOW + 59)).is_ok(),
        "within the leeway"
    );
    assert_eq!(
        with(&|c| c["aud"] = json!("elsewhere")),
        Err(Reason::WrongAudience)
    );
    assert_eq!(
        with(&|c| c["aud"] = json!(null)),
        Err(Reason::WrongAudience)
    );
    assert!(with(&|c| c["aud"] = json!("other")).is_ok());
    assert_eq!(
        with(&|c| c["iss"] = json!("https://evil")),
        Err(Reason::WrongIssuer)
    );
    assert_eq!(
        with(&|c| c["scope"] = json!("write")),
        Err(Reason::MissingClaim)
    );
    assert_eq!(
        with(&|c| {
            c.as_object_mut().unwrap().remove("scope");
        }),
        Err(Reason::MissingClaim)
    );
    assert!(
        with(&|c| c["scope"] = json!(["read", "x"])).is_ok(),
        "array claims contain the value"
    );
    assert_eq!(
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        Err(Reason::InvalidToken),
        "a token that never expires is refused"
    );

    let unknown = sign(Algorithm::ES256, Some("ec-2"), &es, &good_claims());
    assert_eq!(v.verify(&keys, &unknown, NOW), Err(Reason::UnknownKid));
    // Signed by another key under a known kid.
    let (other, _) = es256("ec-1");
    let forged = sign(Algorithm::ES256, Some("ec-1"), &other, &good_claims());
    assert_eq!(v.verify(&keys, &forged, NOW), Err(Reason::InvalidToken));
    // An EdDSA key cannot verify an ES256 token, even under its kid.
    let mixed = sign(Algorithm::ES256, Some("ed-1"), &es, &good_claims());
    assert_eq!(v.verify(&keys, &mixed, NOW), Err(Reason::InvalidToken));
    for garbage in ["", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.e30."] {
        assert_eq!(
            v.verify(&keys, garbage, NOW),
            Err(Reason::InvalidToken),
            "{garbage:?}"
        );
    }
}

#[test]
fn hmac_tokens_are_refused_by_a_jwks_verifier_and_alg_confusion_fails() {
    let (v, keys, _, _) = jwks_verifier();
    let hs = sign(
        Algorithm::HS256,
        Some("ec-1"),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        &good_claims(),
    );
    assert_eq!(v.verify(&keys, &hs, NOW), Err(Reason::InvalidToken));
}

#[test]
fn hs256_secret_verifies_and_ignores_kid() {
    let secret = b"0123456789abcdef0123456789abcdef";
    let cfg = config(
        KeySource::Secret {
            path: "s".into(),
            bytes: Secret(secret.to_vec()),
        },
        vec![Algorithm::HS256],
    );
    let v = Verifier::new(&cfg);
    let keys = KeySet::from_secret(secret);
    let key = EncodingKey::from_secret(secret);
    let ok = sign(Algorithm::HS256, Some("whatever"), &key, &good_claims());
    assert!(v.verify(&keys, &ok, NOW).is_ok());
    let wrong = EncodingKey::from_secret(b"another secret, just as long......");
    let bad = sign(Algorithm::HS256, None, &wrong, &good_claims());
    assert_eq!(v.verify(&keys, &bad, NOW), Err(Reason::InvalidToken));
    let hs512 = sign(Algorithm::HS512, None, &key, &good_claims());
    assert_eq!(
        v.verify(&keys, &hs512, NOW),
        Err(Reason::InvalidToken),
        "alg not accepted"
    );
}

#[test]
fn secret_drops_one_trailing_newline_and_hides_itself() {
    assert_eq!(Secret(b"abc\n".to_vec()).key(), b"abc");
    assert_eq!(Secret(b"abc\r\n".to_vec()).key(), b"abc");
    assert_eq!(Secret(b"abc\n\n".to_vec()).key(), b"abc\n");
    assert_eq!(
        format!("{:?}", Secret(b"abc".to_vec())),
        "Secret(<3 bytes>)"
    );
}

#[test]
fn required_claims_match_names_values_words_and_json_scalars() {
    use super::verify::Verifier;
    let mut cfg = config(
        KeySource::Jwks {
            url: "http://idp/k".into(),
            ca: None,
        },
        vec![Algorithm::ES256],
    );
    cfg.required_claims = vec![
        ("admin".into(), Some("true".into())),
        ("level".into(), Some("3".into())),
        ("tenant".into(), None),
    ];
    let v = Verifier::new(&cfg);
    let (es, jwk) = es256("k");
    let keys = KeySet::from_jwks(json!({"keys": [jwk]}).to_string().as_bytes()).unwrap();
    let mut c = good_claims();
    c["admin"] = json!(true);
    c["level"] = json!(3);
    c["tenant"] = json!({"id": 1});
    assert!(v
        .verify(&keys, &sign(Algorithm::ES256, Some("k"), &es, &c), NOW)
        .is_ok());
    for (name, bad) in [
        ("admin", json!(false)),
        ("level", json!("three")),
        ("tenant", json!(null)),
    ] {
        let mut c2 = c.clone();
        c2[name] = bad;
        let t = sign(Algorithm::ES256, Some("k"), &es, &c2);
        assert_eq!(
            v.verify(&keys, &t, NOW),
            Err(Reason::MissingClaim),
            "{name}"
        );
    }
}

#[test]
fn claim_values_become_field_values() {
    assert_eq!(claim_value(&json!("alice")).unwrap(), "alice");
    assert_eq!(claim_value(&json!(["a", "b"])).unwrap(), "a,b");
    assert_eq!(claim_value(&json!(42)).unwrap(), "42");
    assert_eq!(claim_value(&json!({"k": 1})).unwrap(), "{\"k\":1}");
    assert!(claim_value(&json!("line\nbreak")).is_none());
    assert!(claim_value(&json!(null)).is_none());
}

#[test]
fn tokens_are_found_in_bearer_fields_named_fields_and_cookies() {
    let mut map = http::HeaderMap::new();
    map.insert(AUTHORIZATION, HeaderValue::from_static("bEaReR   tok1 "));
    map.insert("x-token", HeaderValue::from_static("Bearer tok2"));
    map.append(COOKIE, HeaderValue::from_static("a=1; session=\"tok3\""));
    map.append(COOKIE, HeaderValue::from_static("b=2"));
    let mut fields = Fields::new(&mut map, None);
    assert_eq!(
        token(&TokenSource::Bearer, &fields).as_deref(),
        Some("tok1")
    );
    let header = TokenSource::Header(HeaderName::from_static("x-token"));
    assert_eq!(token(&header, &fields).as_deref(), Some("tok2"));
    let cookie = TokenSource::Cookie("session".into());
    assert_eq!(token(&cookie, &fields).as_deref(), Some("tok3"));
    assert_eq!(token(&TokenSource::Cookie("nope".into()), &fields), None);
    strip(&cookie, &mut fields);
    assert_eq!(fields.get(&COOKIE), Some(&b"a=1; b=2"[..]));
    strip(&TokenSource::Bearer, &mut fields);
    assert_eq!(token(&TokenSource::Bearer, &fields), None);

    let mut basic = http::HeaderMap::new();
    basic.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi"));
    assert_eq!(
        token(&TokenSource::Bearer, &Fields::new(&mut basic, None)),
        None
    );
}
