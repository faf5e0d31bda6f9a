//! `jwt:` middleware config: bearer tokens verified against a JWKS URL
//! (RS256, ES256, EdDSA, ...) or an HS256 secret file.
//!
//! ```yaml
//! jwt:
//!   jwks_url: https://idp.example.com/.well-known/jwks.json  # or secret_file
//!   jwks_ca: idp-ca.pem                 # default: the public web roots
//!   algorithms: [RS256, ES256, EdDSA]   # default for jwks_url; [HS256] for secret_file
//!   issuer: https://idp.example.com/    # string or list; unchecked when absent
//!   audience: api                       # string or list; unchecked when absent
//!   leeway: 60s                         # clock skew allowed on exp / nbf
//!   refresh_interval: 10m               # JWKS refetch period
//!   fetch_timeout: 5s                   # one JWKS fetch, whole exchange
//!   token: {header: X-Token}            # or {cookie: session}; default Authorization: Bearer
//!   required_claims: [scope]            # or {scope: read, role: admin}
//!   claims_to_headers: {sub: X-User, email: X-Email}
//!   strip_token: false                  # remove the token before forwarding
//!   realm: api                          # WWW-Authenticate realm; default the middleware name
//! ```
//!
//! Exactly one of `jwks_url` and `secret_file` is set. An `https://`
//! JWKS server's certificate is checked against the public web roots, or
//! against `jwks_ca` (a PEM bundle, read and watched like `secret_file`)
//! when set, as `pools[].tls.ca` does for upstreams. The secret file is read here, at config load, so
//! it is part of the config's hash and watched like a certificate: editing
//! it reloads the config. One trailing newline (`\n` or `\r\n`) is not part
//! of the secret (files written by `echo` end with one); the rest must be
//! at least 32 bytes, the HMAC-SHA-256 output size RFC 7518 §3.2 requires.
//!
//! Algorithms are checked against the key source: HMAC algorithms with a
//! JWKS would let anyone who knows the public key forge tokens (the
//! classic algorithm-confusion attack), and public-key algorithms make no
//! sense with a shared secret, so both mixes are errors.
//!
//! `required_claims` is a list of claim names that must be present, or a
//! mapping name → value: the claim must equal the value, or (an array
//! claim) contain it, or (a space-separated string such as OAuth's
//! `scope`) have it as one of its words. A token that verifies but misses
//! one gets 403 (`insufficient_scope`).
//!
//! `strip_token` defaults to `false`, as nginx and Traefik forward the
//! `Authorization` field: applications behind weir often read the token
//! themselves. Envoy's `jwt_authn` strips by default (`forward: false`);
//! set `strip_token: true` for that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::config::duration::ConfigDuration;
use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// Default `leeway`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default `refresh_interval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);
/// Default `fetch_timeout`.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest HS256 secret (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET: usize = 32;

/// `jwt:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `jwks_url` or `secret_file`, e.g. `{jwks_url: https://idp/jwks.json}`"
)]
pub struct RawJwt {
    /// Where the public keys are.
    pub jwks_url: Option<String>,
    /// CA bundle for an `https://` JWKS (instead of the public roots).
    pub jwks_ca: Option<String>,
    /// The HS256 secret's file.
    pub secret_file: Option<String>,
    /// Accepted `alg` values.
    pub algorithms: Option<Vec<String>>,
    /// Accepted `iss` values.
    pub issuer: Option<OneOrMany>,
    /// Accepted `aud` values.
    pub audience: Option<OneOrMany>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Option<ConfigDuration>,
    /// JWKS refetch period.
    pub refresh_interval: Option<ConfigDuration>,
    /// One JWKS fetch's limit.
    pub fetch_timeout: Option<ConfigDuration>,
    /// Where the token is.
    pub token: Option<RawTokenSource>,
    /// Claims a token must have.
    pub required_claims: Option<RawRequired>,
    /// Claim → upstream field name.
    pub claims_to_headers: Option<BTreeMap<String, String>>,
    /// Remove the token before forwarding.
    pub strip_token: Option<bool>,
    /// `WWW-Authenticate` realm.
    pub realm: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or a list of strings")]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `token:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "`{header: X-Token}` or `{cookie: name}`"
)]
pub struct RawTokenSource {
    /// A field holding the bare token (or `Bearer <token>`).
    pub header: Option<String>,
    /// A cookie holding the token.
    pub cookie: Option<String>,
}

/// `required_claims:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of claim names, or a mapping claim → required value"
)]
pub enum RawRequired {
    /// Names that must be present.
    Names(Vec<String>),
    /// Name → value.
    Values(BTreeMap<String, String>),
}

/// Where the keys come from.
#[derive(Clone, Debug, PartialEq)]
pub enum KeySource {
    /// A JWKS document fetched from `url`.
    Jwks {
        /// `http://` or `https://`.
        url: String,
        /// The CA bundle that signs the JWKS server's certificate, when
        /// not a public one.
        ca: Option<super::CaFile>,
    },
    /// An HMAC secret read from a file.
    Secret {
        /// The file.
        path: PathBuf,
        /// Its bytes as read (hashed and compared by reloads).
        bytes: Secret,
    },
}

/// Secret bytes that never show in `Debug` output (`weir check`, logs).
#[derive(Clone, PartialEq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl Secret {
    /// The key: the file's bytes less one trailing newline.
    pub fn key(&self) -> &[u8] {
        let b = self.0.as_slice();
        let b = b.strip_suffix(b"\n").unwrap_or(b);
        b.strip_suffix(b"\r").unwrap_or(b)
    }
}

/// Where a request's token is.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// This field's value (a `Bearer ` prefix is allowed).
    Header(HeaderName),
    /// This cookie.
    Cookie(String),
}

/// The validated `jwt:` middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtConfig {
    /// The keys.
    pub keys: KeySource,
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
    /// Accepted issuers (empty: unchecked).
    pub issuer: Vec<String>,
    /// Accepted audiences (empty: unchecked).
    pub audience: Vec<String>,
    /// Clock skew allowed on `exp` / `nbf`.
    pub leeway: Duration,
    /// JWKS refetch period.
    pub refresh_interval: Duration,
    /// One JWKS fetch's limit.
    pub fetch_timeout: Duration,
    /// Where the token is.
    pub token: TokenSource,
    /// Claim name and, if given, the value it must have or contain.
    pub required_claims: Vec<(String, Option<String>)>,
    /// Claim → upstream field.
    pub claims_to_headers: Vec<(String, HeaderName)>,
    /// Remove the token before forwarding.
    pub strip_token: bool,
    /// `WWW-Authenticate` realm.
    pub realm: String,
}

impl JwtConfig {
    /// The secret file, if the keys come from one.
    pub fn files(&self) -> Vec<(&std::path::Path, &[u8])> {
        match &self.keys {
            KeySource::Secret { path, bytes } => vec![(path.as_path(), bytes.0.as_slice())],
            KeySource::Jwks { ca: Some(ca), .. } => vec![(ca.path.as_path(), ca.pem.as_slice())],
            KeySource::Jwks { ca: None, .. } => Vec::new(),
        }
    }
}

impl JwtConfig {
    /// What an operator should know (`weir check`, startup, reload).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let KeySource::Jwks { url, .. } = &self.keys {
            let uri: Option<http::Uri> = url.parse().ok();
            let host = uri.as_ref().and_then(|u| u.host()).unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if url.starts_with("http://") && !loopback {
                out.push(
                    "jwks_url is plain http://: anyone on the path can serve their own keys \
                     and forge tokens; use https://"
                        .to_owned(),
                );
            }
            if self.audience.is_empty() {
                out.push(
                    "no `audience`: any token the IdP signs, for any application, passes"
                        .to_owned(),
                );
            }
        }
        out
    }
}

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    name: &str,
    raw: RawJwt,
) -> Result<JwtConfig, ConfigError> {
    let mut keys = key_source(v, key, raw.jwks_url, raw.secret_file)?;
    if let Some(ca) = raw.jwks_ca {
        let at = format!("{key}.jwks_ca");
        let KeySource::Jwks { url, ca: slot } = &mut keys else {
            return Err(v.err(&at, "`jwks_ca` goes with an https:// `jwks_url`; remove it"));
        };
        if !url.starts_with("https://") {
            return Err(v.err(
                &at,
                "`jwks_ca` is for an https:// `jwks_url`; remove it or use https",
            ));
        }
        *slot = Some(super::ca_file(v, &at, &ca)?);
    }
    let algorithms = algorithms(v, key, &keys, raw.algorithms)?;
    let list = |l: Option<OneOrMany>| match l {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(l)) => l,
    };
    let issuer = list(raw.issuer);
    let audience = list(raw.audience);
    for (what, l) in [("issuer", &issuer), ("audience", &audience)] {
        if l.iter().any(|s| s.is_empty()) {
            return Err(v.err(format!("{key}.{what}"), "empty value; remove it or fill it"));
        }
    }
    let realm = raw.realm.unwrap_or_else(|| name.to_owned());
    if realm.contains(['"', '\\']) || http::HeaderValue::from_str(&realm).is_err() {
        return Err(v.err(
            format!("{key}.realm"),
            "the realm must be visible ASCII without `\"` or `\\`",
        ));
    }
    Ok(JwtConfig {
        keys,
        algorithms,
        issuer,
        audience,
        leeway: raw.leeway.map_or(DEFAULT_LEEWAY, |d| d.0),
        refresh_interval: v.nonzero(
            &format!("{key}.refresh_interval"),
            raw.refresh_interval,
            DEFAULT_REFRESH_INTERVAL,
        )?,
        fetch_timeout: v.nonzero(
            &format!("{key}.fetch_timeout"),
            raw.fetch_timeout,
            DEFAULT_FETCH_TIMEOUT,
        )?,
        token: token_source(v, &format!("{key}.token"), raw.token)?,
        required_claims: required(v, &format!("{key}.required_claims"), raw.required_claims)?,
        claims_to_headers: to_headers(
            v,
            &format!("{key}.claims_to_headers"),
            raw.claims_to_headers,
        )?,
        strip_token: raw.strip_token.unwrap_or(false),
        realm,
    })
}

fn key_source(
    v: &Validator<'_>,
    key: &str,
    url: Option<String>,
    secret: Option<String>,
) -> Result<KeySource, ConfigError> {
    match (url, secret) {
        (Some(_), Some(_)) => Err(v.err(
            key,
            "set either `jwks_url` (public keys) or `secret_file` (HS256), not both",
        )),
        (None, None) => Err(v.err(
            key,
            "no keys: add `jwks_url: https://idp.example.com/jwks.json` or `secret_file: path`",
        )),
        (Some(url), None) => {
            let at = format!("{key}.jwks_url");
            let uri: http::Uri = url
                .parse()
                .map_err(|_| v.err(&at, format!("`{url}` is not a URL")))?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            if !scheme_ok || uri.host().is_none_or(str::is_empty) {
                return Err(v.err(
                    &at,
                    format!("`{url}` is not an http:// or https:// URL with a host"),
                ));
            }
            Ok(KeySource::Jwks { url, ca: None })
        }
        (None, Some(file)) => {
            let at = format!("{key}.secret_file");
            let path = v.path(&at, &file)?;
            let bytes = std::fs::read(&path)
                .map_err(|e| v.err(&at, format!("cannot read {}: {e}", path.display())))?;
            let secret = Secret(bytes);
            if secret.key().len() < MIN_SECRET {
                return Err(v.err(
                    &at,
                    format!(
                        "the secret in {} is {} bytes; HS256 needs at least {MIN_SECRET} \
                         (RFC 7518 §3.2): make one with `openssl rand -base64 48`",
                        path.display(),
                        secret.key().len()
                    ),
                ));
            }
            Ok(KeySource::Secret {
                path,
                bytes: secret,
            })
        }
    }
}

fn algorithms(
    v: &Validator<'_>,
    key: &str,
    keys: &KeySource,
    raw: Option<Vec<String>>,
) -> Result<Vec<Algorithm>, ConfigError> {
    let hmac = matches!(keys, KeySource::Secret { .. });
    let Some(raw) = raw else {
        return Ok(if hmac {
            vec![Algorithm::HS256]
        } else {
            vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
        });
    };
    if raw.is_empty() {
        return Err(v.err(
            format!("{key}.algorithms"),
            "empty list; remove the key for the default",
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, name) in raw.iter().enumerate() {
        let at = format!("{key}.algorithms[{i}]");
        let alg: Algorithm = name.parse().map_err(|_| {
            v.err(
                &at,
                format!(
                    "unknown algorithm `{name}`; use RS256, RS384, RS512, PS256, PS384, PS512, \
                     ES256, ES384, EdDSA (with jwks_url) or HS256, HS384, HS512 (with secret_file)"
                ),
            )
        })?;
        let is_hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        if is_hmac != hmac {
            let msg = if hmac {
                format!("`{name}` needs public keys (`jwks_url`); a secret_file takes HS256, HS384 or HS512")
            } else {
                format!(
                    "`{name}` is an HMAC algorithm: with a JWKS anyone holding the public key \
                     could forge tokens; use `secret_file` for it"
                )
            };
            return Err(v.err(&at, msg));
        }
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    Ok(out)
}

fn token_source(
    v: &Validator<'_>,
    key: &str,
    raw: Option<RawTokenSource>,
) -> Result<TokenSource, ConfigError> {
    match raw {
        None => Ok(TokenSource::Bearer),
        Some(RawTokenSource {
            header: Some(h),
            cookie: None,
        }) => {
            let name = HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                v.err(
                    format!("{key}.header"),
                    format!("`{h}` is not a field name (letters, digits and `-`)"),
                )
            })?;
            if name == http::header::AUTHORIZATION {
                return Ok(TokenSource::Bearer);
            }
            Ok(TokenSource::Header(name))
        }
        Some(RawTokenSource {
            header: None,
            cookie: Some(c),
        }) => {
            let ok = !c.is_empty() && c.bytes().all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b));
            if !ok {
                return Err(v.err(format!("{key}.cookie"), format!("`{c}` is not a cookie name")));
            }
            Ok(TokenSource::Cookie(c))
        }
        Some(_) => Err(v.err(
            key,
            "set one of `header: X-Token` or `cookie: name` (or remove `token:` for `Authorization: Bearer`)",
        )),
    }
}

fn required(
    v: &Validator<'_>,
    key: &str,
    raw: Option<RawRequired>,
) -> Result<Vec<(String, Option<String>)>, ConfigError> {
    let out: Vec<(String, Option<String>)> = match raw {
        None => Vec::new(),
        Some(RawRequired::Names(l)) => l.into_iter().map(|n| (n, None)).collect(),
        Some(RawRequired::Values(m)) => m.into_iter().map(|(n, val)| (n, Some(val))).collect(),
    };
    if out.iter().any(|(n, _)| n.is_empty()) {
        return Err(v.err(key, "empty claim name"));
    }
    Ok(out)
}

fn to_headers(
    v: &Validator<'_>,
    key: &str,
    raw: Option<BTreeMap<String, String>>,
) -> Result<Vec<(String, HeaderName)>, ConfigError> {
    let mut out = Vec::new();
    for (claim, field) in raw.unwrap_or_default() {
        let at = format!("{key}.{claim}");
        let name = HeaderName::from_bytes(field.as_bytes()).map_err(|_| {
            v.err(
                &at,
                format!("`{field}` is not a field name (letters, digits and `-`, e.g. `X-User`)"),
            )
        })?;
        if super::headers::RESERVED.contains(&name.as_str()) || name == http::header::AUTHORIZATION
        {
            return Err(v.err(
                &at,
                format!("`{field}` cannot carry a claim; pick e.g. `X-User`"),
            ));
        }
        if out.iter().any(|(_, n)| *n == name) {
            return Err(v.err(&at, format!("`{field}` already carries another claim")));
        }
        out.push((claim, name));
    }
    Ok(out)
}
