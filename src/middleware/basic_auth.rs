//! `basic_auth`: HTTP Basic authentication (RFC 7617) against the bcrypt
//! hashes of an htpasswd file (see `crate::config::middleware::basic_auth`
//! for the file and the keys).
//!
//! A request without `Authorization: Basic ...` (none, or another scheme)
//! is refused with 401 `missing_credentials`, one whose credentials do not
//! decode (bad base64, no `:`, two `Authorization` fields) with 401
//! `malformed`, and one whose user or password is wrong with 401
//! `bad_credentials`; every 401 carries
//! `WWW-Authenticate: Basic realm="...", charset="UTF-8"`, so a browser
//! asks for a password.
//!
//! bcrypt is slow on purpose (a cost-10 hash takes tens of milliseconds),
//! so a verification never runs on the async workers: it runs on tokio's
//! blocking pool, and at most one per CPU runs at once (a flood of wrong
//! passwords queues for CPU instead of taking every blocking thread, which
//! DNS lookups and file reads also need). A successful verification is
//! remembered, so a keep-alive client sending the same credentials pays
//! bcrypt once, not per request: the cache holds HMAC-SHA-256 tags of the
//! whole `user:password` under a key drawn at random for this instance (a
//! memory dump shows no password and no unkeyed digest to brute-force),
//! at most [`CACHE_CAPACITY`] of them (it is emptied when full, the simple
//! bound; entries then verify once more). Failures are never cached: each
//! wrong guess costs the guesser a full bcrypt. The cache belongs to the
//! instance, and a changed htpasswd file builds a new instance, so a
//! removed user or a changed password stops working at once.
//!
//! Timing: an unknown user is checked against a dummy hash of the same
//! cost as the file's first entry, so "no such user" takes as long as
//! "wrong password" and user names cannot be probed by timing; the hash
//! comparison itself is constant-time (the `bcrypt` crate compares with
//! `subtle`). The cache lookup compares HMAC tags, which leak nothing about
//! the password.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderName, HeaderValue};
use ring::hmac;
use tokio::sync::Semaphore;

use crate::config::middleware::BasicAuthConfig;
use crate::error::{Refusal, RefusalKind};

use super::{Fields, Request};

/// The most remembered credentials per instance.
pub const CACHE_CAPACITY: usize = 1024;

/// Standard base64, with or without padding (clients differ).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One user: the hash to verify, and the name as a field value.
struct User {
    hash: Arc<str>,
    header: HeaderValue,
}

/// A `basic_auth` instance: the users, and the cache of verified
/// credentials.
pub struct BasicAuth {
    users: HashMap<Box<[u8]>, User>,
    /// Verified for unknown users (see the module docs).
    dummy: Arc<str>,
    challenge: HeaderValue,
    user_header: Option<HeaderName>,
    strip_authorization: bool,
    /// `None` if no random key could be drawn: then nothing is cached.
    key: Option<hmac::Key>,
    verified: Mutex<HashSet<[u8; 32]>>,
    verifying: Arc<Semaphore>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("users", &self.users.len())
            .field("user_header", &self.user_header)
            .field("strip_authorization", &self.strip_authorization)
            .finish_non_exhaustive()
    }
}

/// Credentials as decoded: `user:password`.
#[derive(PartialEq, Eq)]
pub struct Credentials {
    decoded: Vec<u8>,
    colon: usize,
}

/// Never prints the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(self.user()))
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The user id.
    pub fn user(&self) -> &[u8] {
        self.decoded.get(..self.colon).unwrap_or_default()
    }

    /// The password.
    pub fn password(&self) -> &[u8] {
        self.decoded.get(self.colon + 1..).unwrap_or_default()
    }
}

/// Parses one `Authorization` value as Basic credentials (RFC 7617 §2:
/// the scheme is case-insensitive, the user id ends at the first `:`).
/// `Err` is the refusal reason.
pub fn parse_basic(value: &[u8]) -> Result<Credentials, &'static str> {
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (
            value.get(..i).unwrap_or_default(),
            value.get(i..).unwrap_or_default(),
        ),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Err("missing_credentials");
    }
    let decoded = BASE64.decode(rest.trim_ascii()).map_err(|_| "malformed")?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or("malformed")?;
    Ok(Credentials { decoded, colon })
}

/// The client's credentials from its fields, or the refusal reason.
fn credentials(fields: &Fields<'_>) -> Result<Credentials, &'static str> {
    let mut values = fields.get_all(&AUTHORIZATION);
    let first = values.next().ok_or("missing_credentials")?;
    if values.next().is_some() {
        return Err("malformed");
    }
    parse_basic(first)
}

/// A syntactically valid bcrypt hash of `cost` that no password matches
/// in practice: verifying against it costs what a real check does.
fn dummy_hash(cost: u32) -> String {
    format!("$2b${cost:02}${}", ".".repeat(53))
}

impl BasicAuth {
    /// The instance of `config`, with an empty cache.
    pub fn new(config: &BasicAuthConfig) -> Self {
        let users = config
            .users
            .iter()
            .filter_map(|u| {
                let header = HeaderValue::from_str(&u.name).ok()?;
                let user = User {
                    hash: u.hash.as_str().into(),
                    header,
                };
                Some((u.name.as_bytes().into(), user))
            })
            .collect();
        let cost = config
            .users
            .first()
            .and_then(|u| bcrypt::HashParts::from_str(&u.hash).ok())
            .map_or(bcrypt::DEFAULT_COST, |p| p.get_cost());
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        BasicAuth {
            users,
            dummy: dummy_hash(cost).into(),
            challenge: config.challenge.clone(),
            user_header: config.user_header.clone(),
            strip_authorization: config.strip_authorization,
            key: hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new()).ok(),
            verified: Mutex::new(HashSet::new()),
            verifying: Arc::new(Semaphore::new(cpus)),
        }
    }

    pub(super) async fn apply(
        &self,
        name: &Arc<str>,
        req: &mut Request<'_>,
    ) -> Result<(), Box<Refusal>> {
        // First, whatever the outcome: a client cannot name its own user.
        if let Some(h) = &self.user_header {
            req.fields.remove(h);
        }
        let creds = credentials(&req.fields).map_err(|reason| self.refuse(name, reason))?;
        let Some(user) = self.verify(&creds).await else {
            return Err(self.refuse(name, "bad_credentials"));
        };
        if let Some(h) = &self.user_header {
            req.fields.set(h.clone(), user);
        }
        if self.strip_authorization {
            req.fields.remove(&AUTHORIZATION);
        }
        Ok(())
    }

    fn refuse(&self, name: &Arc<str>, reason: &'static str) -> Box<Refusal> {
        let mut r = Refusal::new(name, RefusalKind::Unauthenticated, reason);
        r.headers.insert(WWW_AUTHENTICATE, self.challenge.clone());
        Box::new(r)
    }

    /// The user's name (as a field value) if the credentials verify.
    pub async fn verify(&self, creds: &Credentials) -> Option<HeaderValue> {
        let user = self.users.get(creds.user());
        let tag = self.key.as_ref().and_then(|k| {
            let tag = hmac::sign(k, &creds.decoded);
            <[u8; 32]>::try_from(tag.as_ref()).ok()
        });
        if let (Some(user), Some(tag)) = (user, &tag) {
            if self.verified.lock().is_ok_and(|v| v.contains(tag)) {
                return Some(user.header.clone());
            }
        }
        let hash = user.map_or_else(|| Arc::clone(&self.dummy), |u| Arc::clone(&u.hash));
        let password = creds.password().to_vec();
        let permit = Arc::clone(&self.verifying).acquire_owned().await.ok()?;
        // The permit moves into the task: it is released when bcrypt is
        // done, even if this request was dropped meanwhile.
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(&password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let user = user.filter(|_| ok)?;
        if let Some(tag) = tag {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() >= CACHE_CAPACITY {
                    v.clear();
                }
                v.insert(tag);
            }
        }
        Some(user.header.clone())
    }

    /// How many verified credentials are remembered.
    pub fn cached(&self) -> usize {
        self.verified.lock().map_or(0, |v| v.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::middleware::basic_auth::HtpasswdUser;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn auth(users: &[(&str, &str)]) -> BasicAuth {
        BasicAuth::new(&BasicAuthConfig {
            users_file: "users".into(),
            file_bytes: Vec::new(),
            users: users
                .iter()
                .map(|(n, p)| HtpasswdUser {
                    name: (*n).to_owned(),
                    hash: bcrypt::hash(p, 4).unwrap(),
                })
                .collect(),
            realm: "weir".into(),
            challenge: HeaderValue::from_static("Basic realm=\"weir\""),
            user_header: None,
            strip_authorization: false,
        })
    }

    #[test]
    fn parses_basic_credentials_as_rfc_7617_says() {
        let c = parse_basic(format!("Basic {}", b64("alice:pa:ss")).as_bytes()).unwrap();
        assert_eq!((c.user(), c.password()), (&b"alice"[..], &b"pa:ss"[..]));
        // Scheme in any case, extra spaces, no padding.
        let c = parse_basic(b"bAsIc   YTpi").unwrap();
        assert_eq!((c.user(), c.password()), (&b"a"[..], &b"b"[..]));
        let c = parse_basic(format!("Basic {}", b64("bob:")).as_bytes()).unwrap();
        assert_eq!((c.user(), c.password()), (&b"bob"[..], &b""[..]));
        assert_eq!(parse_basic(b"Bearer abc"), Err("missing_credentials"));
        assert_eq!(parse_basic(b"Basic"), Err("malformed"));
        assert_eq!(parse_basic(b"Basic !!!"), Err("malformed"));
        let no_colon = format!("Basic {}", b64("alice"));
        assert_eq!(parse_basic(no_colon.as_bytes()), Err("malformed"));
    }

    #[test]
    fn the_dummy_hash_is_valid_bcrypt_that_matches_nothing() {
        let dummy = dummy_hash(4);
        assert!(bcrypt::HashParts::from_str(&dummy).is_ok());
        assert!(!bcrypt::verify("", &dummy).unwrap());
        assert!(!bcrypt::verify("password", &dummy).unwrap());
    }

    #[tokio::test]
    async fn verifies_caches_successes_only_and_refuses_unknown_users() {
        let a = auth(&[("alice", "secret"), ("bob", "hunter2")]);
        let creds = |s: &str| parse_basic(format!("Basic {}", b64(s)).as_bytes()).unwrap();
        assert_eq!(a.verify(&creds("alice:secret")).await.unwrap(), "alice");
        assert_eq!(a.cached(), 1);
        assert_eq!(a.verify(&creds("alice:secret")).await.unwrap(), "alice");
        assert_eq!(a.cached(), 1);
        assert!(a.verify(&creds("alice:wrong")).await.is_none());
        assert!(a.verify(&creds("bob:secret")).await.is_none());
        assert!(a.verify(&creds("mallory:secret")).await.is_none());
        assert_eq!(a.cached(), 1, "failures are not remembered");
        assert_eq!(a.verify(&creds("bob:hunter2")).await.unwrap(), "bob");
        assert_eq!(a.cached(), 2);
    }
}
