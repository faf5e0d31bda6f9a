//! `jwt`: lets a request on only with a valid bearer token (RFC 7519
//! JWT, RFC 6750 bearer usage), verified against a JWKS (RS*, PS*, ES256,
//! ES384, EdDSA) or an HMAC secret (HS*); see
//! `crate::config::middleware::jwt` for the config and its defaults.
//!
//! The token is taken from `Authorization: Bearer <token>` (the scheme is
//! case-insensitive), or from a named field (its value, a `Bearer ` prefix
//! allowed) or a cookie. Answers:
//!
//! - no token: 401 with `WWW-Authenticate: Bearer realm="…"` and no error
//!   code (RFC 6750 §3.1: a client that sent nothing gets no error);
//! - a token that does not verify (malformed, bad signature, unaccepted
//!   `alg`, no `exp`, expired, not yet valid, wrong `iss` / `aud`, unknown
//!   `kid`): 401 with `error="invalid_token"` and an `error_description`;
//! - a valid token missing a `required_claims` entry: 403 with
//!   `error="insufficient_scope"`;
//! - no key set could be loaded yet: 503 (never an unverified pass).
//!
//! Each refusal's `reason` label is one of `missing_token`,
//! `invalid_token`, `expired`, `not_yet_valid`, `wrong_issuer`,
//! `wrong_audience`, `unknown_kid`, `missing_claim`, `keys_unavailable`.
//!
//! On success, every `claims_to_headers` field is first removed from the
//! request (a client cannot send its own `X-User`), then set from the
//! claim when the token has it (strings as they are, arrays of strings
//! joined with `,`, other values as JSON; a value that cannot be a field
//! value is dropped). `strip_token` then removes the token (the field, or
//! just the cookie).
//!
//! Verification is pure ([`Verifier::verify`] over a [`KeySet`]); the
//! cache and its JWKS fetcher are in [`keys`].

use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue};

use crate::config::middleware::jwt::{JwtConfig, KeySource, TokenSource};
use crate::error::{Refusal, RefusalKind};

use super::{Fields, Request};

pub mod keys;
pub mod verify;

#[cfg(test)]
mod tests;

pub use keys::Keys;
pub use verify::{claim_value, Claims, KeySet, Reason, Verifier};

/// A `jwt` middleware instance: its rules and its key cache (which a
/// reload keeps with the instance when the config is unchanged).
#[derive(Debug)]
pub struct Jwt {
    verifier: Verifier,
    keys: Arc<Keys>,
    token: TokenSource,
    claims_to_headers: Vec<(String, HeaderName)>,
    strip_token: bool,
    realm: String,
}

impl Jwt {
    /// The instance of `config`; for a JWKS this starts its fetch task.
    pub fn new(config: &JwtConfig) -> Jwt {
        let keys = match &config.keys {
            KeySource::Secret { bytes, .. } => Keys::fixed(KeySet::from_secret(bytes.key())),
            KeySource::Jwks { url, ca } => Keys::jwks(
                url,
                keys::client_tls(ca.as_ref()),
                config.refresh_interval,
                config.fetch_timeout,
            ),
        };
        Jwt {
            verifier: Verifier::new(config),
            keys,
            token: config.token.clone(),
            claims_to_headers: config.claims_to_headers.clone(),
            strip_token: config.strip_token,
            realm: config.realm.clone(),
        }
    }

    /// The key cache.
    pub fn keys(&self) -> &Arc<Keys> {
        &self.keys
    }

    pub(super) async fn apply(
        &self,
        name: &Arc<str>,
        req: &mut Request<'_>,
    ) -> Result<(), Box<Refusal>> {
        let Some(token) = token(&self.token, &req.fields) else {
            return Err(self.refuse(name, Reason::MissingToken));
        };
        let claims = self
            .keys
            .verify(&self.verifier, &token)
            .await
            .map_err(|reason| self.refuse(name, reason))?;
        for (claim, field) in &self.claims_to_headers {
            req.fields.remove(field);
            if let Some(value) = claims.get(claim).and_then(claim_value) {
                req.fields.set(field.clone(), value);
            }
        }
        if self.strip_token {
            strip(&self.token, &mut req.fields);
        }
        Ok(())
    }

    /// The answer for `reason`, with its `WWW-Authenticate` challenge.
    fn refuse(&self, name: &Arc<str>, reason: Reason) -> Box<Refusal> {
        let realm = &self.realm;
        let (kind, challenge) = match reason {
            Reason::MissingToken => (
                RefusalKind::Unauthenticated,
                Some(format!("Bearer realm=\"{realm}\"")),
            ),
            Reason::MissingClaim => (
                RefusalKind::Forbidden,
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{}\"",
                    reason.description()
                )),
            ),
            Reason::KeysUnavailable => (RefusalKind::Unavailable, None),
            _ => (
                RefusalKind::Unauthenticated,
                Some(format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    reason.description()
                )),
            ),
        };
        let mut refusal = Refusal::new(name, kind, reason.as_str());
        // The realm is checked at config load; the rest is ours.
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            refusal.headers.insert(WWW_AUTHENTICATE, value);
        }
        Box::new(refusal)
    }
}

/// The request's token, if it has one.
pub fn token(source: &TokenSource, fields: &Fields<'_>) -> Option<String> {
    let text = match source {
        TokenSource::Bearer => bearer(fields.get(&AUTHORIZATION)?)?,
        TokenSource::Header(name) => {
            let v = std::str::from_utf8(fields.get(name)?).ok()?.trim();
            bearer(v.as_bytes()).unwrap_or(v)
        }
        TokenSource::Cookie(name) => {
            return fields
                .get_all(&COOKIE)
                .filter_map(|v| std::str::from_utf8(v).ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.trim_matches('"').to_owned())
                .filter(|v| !v.is_empty());
        }
    };
    Some(text.to_owned()).filter(|t| !t.is_empty())
}

/// The token of a `Bearer <token>` credential (RFC 6750 §2.1).
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start())
}

/// Removes the token from the request.
fn strip(source: &TokenSource, fields: &mut Fields<'_>) {
    match source {
        TokenSource::Bearer => fields.remove(&AUTHORIZATION),
        TokenSource::Header(name) => fields.remove(name),
        TokenSource::Cookie(name) => {
            let kept: Vec<String> = fields
                .get_all(&COOKIE)
                .filter_map(|v| std::str::from_utf8(v).ok())
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .filter(|pair| pair.split_once('=').is_none_or(|(n, _)| n != name))
                .map(str::to_owned)
                .collect();
            fields.remove(&COOKIE);
            if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
                if !kept.is_empty() {
                    fields.set(COOKIE, v);
                }
            }
        }
    }
}
