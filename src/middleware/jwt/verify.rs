//! Pure token verification: a [`KeySet`] (parsed from a JWKS document or
//! made from a secret) and a [`Verifier`] (the config's rules), with no IO
//! and an explicit clock, so it is unit-tested and benchmarked alone.
//!
//! Signatures are checked by `jsonwebtoken` (ring underneath). The claim
//! checks are done here, not by `jsonwebtoken::Validation`, because that
//! reads the wall clock itself (this takes `now_unix`, for tests and
//! benches) and lumps failures together (each has its own [`Reason`]
//! here, a metric label).
//!
//! Key choice: a token with a `kid` is checked against the keys with that
//! `kid` (none → [`Reason::UnknownKid`], which makes the caller refetch a
//! JWKS); one without is tried against every key of a fitting type, as
//! most issuers of kid-less tokens publish a single key. A secret has no
//! `kid`, so with one a token's `kid` is ignored. A key is used
//! only with algorithms of its type (RSA: RS*/PS*, EC P-256: ES256, EC
//! P-384: ES384, OKP Ed25519: EdDSA) and, when the JWK names an `alg`,
//! only with that one. JWKS entries marked `use: enc`, symmetric (`oct`)
//! keys (a public document cannot hold a secret) and keys that do not
//! parse are skipped, so one odd entry does not void the set.
//!
//! Time: `exp` is required (a token that never expires is refused as
//! `invalid_token`); expired when `now > exp + leeway`; not yet valid when
//! `now + leeway < nbf`. `iss` must be one of `issuer` and `aud` (string
//! or array) must share a value with `audience`, when those are set.

use std::collections::HashMap;
use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::middleware::JwtConfig;

/// A token's claims, as its payload has them.
pub type Claims = serde_json::Map<String, Value>;

/// Why a token is refused (the `reason` metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No token in the request: 401 without an error code.
    MissingToken,
    /// Malformed, badly signed, unaccepted algorithm, no `exp`: 401.
    InvalidToken,
    /// Past `exp` (+ leeway): 401.
    Expired,
    /// Before `nbf` (- leeway): 401.
    NotYetValid,
    /// `aud` missing or not accepted: 401.
    WrongAudience,
    /// `iss` missing or not accepted: 401.
    WrongIssuer,
    /// No key has the token's `kid`: 401.
    UnknownKid,
    /// A required claim is missing or has another value: 403.
    MissingClaim,
    /// No key set could be fetched yet: 503.
    KeysUnavailable,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::InvalidToken => "invalid_token",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::UnknownKid => "unknown_kid",
            Reason::MissingClaim => "missing_claim",
            Reason::KeysUnavailable => "keys_unavailable",
        }
    }

    /// The `error_description` of `WWW-Authenticate` (RFC 6750 §3).
    pub fn description(self) -> &'static str {
        match self {
            Reason::MissingToken => "no token",
            Reason::InvalidToken => "the token is malformed or its signature does not verify",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::WrongAudience => "the token is not meant for this audience",
            Reason::WrongIssuer => "the token's issuer is not accepted",
            Reason::UnknownKid => "the token's key is unknown",
            Reason::MissingClaim => "the token lacks a required claim",
            Reason::KeysUnavailable => "the keys to verify tokens are unavailable",
        }
    }
}

/// What kind of key a key is, to match it with algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Rsa,
    P256,
    P384,
    Ed25519,
    Hmac,
}

fn family_of(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 => Family::P256,
        Algorithm::ES384 => Family::P384,
        Algorithm::EdDSA => Family::Ed25519,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
    }
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

/// Verification keys: a JWKS document's, or one secret.
pub struct KeySet {
    keys: Vec<Key>,
    by_kid: HashMap<String, Vec<usize>>,
    /// A secret has no `kid`: tokens' `kid`s are not looked up.
    secret: bool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref()).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    fn new(keys: Vec<Key>) -> KeySet {
        let mut by_kid: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                by_kid.entry(kid.clone()).or_default().push(i);
            }
        }
        KeySet {
            keys,
            by_kid,
            secret: false,
        }
    }

    /// The one key of an HMAC secret.
    pub fn from_secret(secret: &[u8]) -> KeySet {
        let mut set = KeySet::new(vec![Key {
            kid: None,
            alg: None,
            family: Family::Hmac,
            key: DecodingKey::from_secret(secret),
        }]);
        set.secret = true;
        set
    }

    /// The usable signature keys of a JWKS document (RFC 7517 §5); an
    /// error if it is not one or has none.
    pub fn from_jwks(body: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err("no `keys` array".to_owned());
        };
        let keys: Vec<Key> = entries.iter().filter_map(jwk_key).collect();
        if keys.is_empty() {
            return Err(format!(
                "none of its {} keys is a usable signature key",
                entries.len()
            ));
        }
        Ok(KeySet::new(keys))
    }

    /// How many keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

fn jwk_key(entry: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).ok()?;
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Family::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Family::P256,
            EllipticCurve::P384 => Family::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Family::Ed25519
        }
        _ => return None,
    };
    let alg = match jwk.common.key_algorithm {
        // `KeyAlgorithm` also names encryption algorithms; those fail here.
        Some(a) => Some(Algorithm::from_str(&format!("{a:?}")).ok()?),
        None => None,
    };
    if alg.is_some_and(|a| family_of(a) != family) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id,
        alg,
        family,
        key,
    })
}

/// A `jwt` middleware's rules: accepted algorithms, issuers, audiences,
/// leeway and required claims.
#[derive(Debug)]
pub struct Verifier {
    /// One signature-only validation per accepted algorithm (built once:
    /// `Validation` allocates).
    algorithms: Vec<(Algorithm, Validation)>,
    issuer: Vec<String>,
    audience: Vec<String>,
    leeway: u64,
    required: Vec<(String, Option<String>)>,
}

impl Verifier {
    /// The rules of `config`.
    pub fn new(config: &JwtConfig) -> Verifier {
        let algorithms = config
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.validate_exp = false;
                v.validate_nbf = false;
                v.validate_aud = false;
                v.required_spec_claims.clear();
                v.leeway = 0;
                (alg, v)
            })
            .collect();
        Verifier {
            algorithms,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway.as_secs(),
            required: config.required_claims.clone(),
        }
    }

    /// Verifies `token` against `keys` at `now_unix` (seconds since the
    /// epoch): its claims, or why not.
    pub fn verify(&self, keys: &KeySet, token: &str, now_unix: u64) -> Result<Claims, Reason> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Reason::InvalidToken)?;
        let (alg, validation) = self
            .algorithms
            .iter()
            .find(|(a, _)| *a == header.alg)
            .ok_or(Reason::InvalidToken)?;
        let family = family_of(*alg);
        let fits = |k: &&Key| k.family == family && k.alg.is_none_or(|a| a == *alg);
        // The keys listed under the token's kid, or (no kid) all of them.
        let listed: Option<&[usize]> = match &header.kid {
            Some(kid) if !keys.secret => {
                Some(keys.by_kid.get(kid).ok_or(Reason::UnknownKid)?.as_slice())
            }
            _ => None,
        };
        let candidates = keys
            .keys
            .iter()
            .enumerate()
            .filter(|(i, _)| listed.is_none_or(|l| l.contains(i)))
            .map(|(_, k)| k)
            .filter(fits);
        let mut claims = None;
        for k in candidates {
            match jsonwebtoken::decode::<Claims>(token, &k.key, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {}
                Err(_) => return Err(Reason::InvalidToken),
            }
        }
        let claims = claims.ok_or(Reason::InvalidToken)?;
        self.check(&claims, now_unix)?;
        Ok(claims)
    }

    /// The claim checks, in the order a client would fix them.
    fn check(&self, claims: &Claims, now: u64) -> Result<(), Reason> {
        let exp = claims
            .get("exp")
            .and_then(numeric)
            .ok_or(Reason::InvalidToken)?;
        if now > exp.saturating_add(self.leeway) {
            return Err(Reason::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric(nbf).ok_or(Reason::InvalidToken)?;
            if now.saturating_add(self.leeway) < nbf {
                return Err(Reason::NotYetValid);
            }
        }
        if !self.issuer.is_empty() {
            let iss = claims.get("iss").and_then(Value::as_str);
            if !iss.is_some_and(|i| self.issuer.iter().any(|want| want == i)) {
                return Err(Reason::WrongIssuer);
            }
        }
        if !self.audience.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => self.audience.contains(a),
                Some(Value::Array(l)) => l
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audience.iter().any(|want| want == a)),
                _ => false,
            };
            if !ok {
                return Err(Reason::WrongAudience);
            }
        }
        for (name, want) in &self.required {
            if !has_claim(claims.get(name), want.as_deref()) {
                return Err(Reason::MissingClaim);
            }
        }
        Ok(())
    }
}

/// A NumericDate (RFC 7519 §2): seconds, possibly fractional (truncated).
fn numeric(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Whether a claim satisfies a `required_claims` entry.
fn has_claim(claim: Option<&Value>, want: Option<&str>) -> bool {
    let Some(claim) = claim.filter(|c| !c.is_null()) else {
        return false;
    };
    let Some(want) = want else {
        return true;
    };
    match claim {
        Value::String(s) => s == want || s.split(' ').any(|w| w == want),
        Value::Array(l) => l.iter().any(|v| match v {
            Value::String(s) => s == want,
            other => json_eq(other, want),
        }),
        other => json_eq(other, want),
    }
}

/// Whether a non-string claim is the JSON `want` (`42`, `true`).
fn json_eq(claim: &Value, want: &str) -> bool {
    serde_json::from_str::<Value>(want).is_ok_and(|w| w == *claim)
}

/// A claim as a field value: strings as they are, arrays of strings
/// joined with `,`, anything else as JSON. `None` when it cannot be a
/// field value (control characters).
pub fn claim_value(v: &Value) -> Option<http::HeaderValue> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(l) if l.iter().all(Value::is_string) => l
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => return None,
        other => other.to_string(),
    };
    http::HeaderValue::from_str(&text).ok()
}
