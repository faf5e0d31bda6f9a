//! `basic_auth:` middleware config: HTTP Basic authentication (RFC 7617)
//! against an htpasswd file of bcrypt hashes.
//!
//! ```yaml
//! basic_auth:
//!   users_file: users.htpasswd   # relative to the config file's directory
//!   realm: weir                  # default `weir`
//!   user_header: X-Auth-User     # optional; the user name, sent upstream
//!   strip_authorization: false   # default false: the upstream sees it
//! ```
//!
//! The file is the one Apache's `htpasswd -B` writes: one `user:hash` per
//! line; blank lines and lines starting with `#` are ignored. Only bcrypt
//! hashes (`$2y$`, `$2a$`, `$2b$`) are accepted: the other htpasswd
//! schemes (apr1 MD5, `{SHA}`, crypt, plain text) are fast to brute-force,
//! so a file holding one is refused with its line number and the command
//! that makes a bcrypt entry. A duplicate user is refused too (Apache would
//! silently use the first line, which hides a stale entry).
//!
//! The file is read when the config is loaded, and its bytes are part of
//! the config's hash and watched like certificates
//! ([`super::MiddlewareKind::files`]): editing it reloads the config, and a
//! broken edit is refused while the previous users keep working. The file's
//! bytes are part of the validated config, so a changed file builds a new
//! middleware instance with an empty verification cache (a removed user or
//! a changed password stops working at once).
//!
//! `user_header` names a request field set to the authenticated user's
//! name. Whatever the client sent under that name is removed first, on
//! every request, so it cannot be spoofed. `strip_authorization: true`
//! removes the `Authorization` field before forwarding, so the upstream
//! never sees the password (Traefik's `removeHeader`; off by default, as
//! there, because some upstreams read it).

use std::path::PathBuf;
use std::str::FromStr;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// The realm when none is configured.
pub const DEFAULT_REALM: &str = "weir";

/// `basic_auth:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `users_file` and optionally `realm`, `user_header`, \
                 `strip_authorization`"
)]
pub struct RawBasicAuth {
    /// The htpasswd file.
    pub users_file: Option<String>,
    /// The realm shown by browsers.
    pub realm: Option<String>,
    /// The field carrying the user name upstream.
    pub user_header: Option<String>,
    /// Remove `Authorization` before forwarding.
    pub strip_authorization: Option<bool>,
}

/// One user of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HtpasswdUser {
    /// The name, as in the file.
    pub name: String,
    /// The bcrypt hash (`$2y$05$...`).
    pub hash: String,
}

/// The validated `basic_auth:` middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct BasicAuthConfig {
    /// The htpasswd file (resolved against the config's directory).
    pub users_file: PathBuf,
    /// Its bytes as read (part of the config hash; see the module docs).
    pub file_bytes: Vec<u8>,
    /// Its users, in file order.
    pub users: Vec<HtpasswdUser>,
    /// The realm.
    pub realm: String,
    /// `WWW-Authenticate: Basic realm="...", charset="UTF-8"`.
    pub challenge: HeaderValue,
    /// The field set to the user's name, if any.
    pub user_header: Option<HeaderName>,
    /// Remove `Authorization` before forwarding.
    pub strip_authorization: bool,
}

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    raw: RawBasicAuth,
) -> Result<BasicAuthConfig, ConfigError> {
    let file_key = format!("{key}.users_file");
    let Some(file) = raw.users_file else {
        return Err(v.err(
            key,
            "`users_file` is required: an htpasswd file made with `htpasswd -B -c users.htpasswd alice`",
        ));
    };
    let users_file = v.path(&file_key, &file)?;
    let file_bytes = std::fs::read(&users_file).map_err(|e| {
        v.err(
            &file_key,
            format!("cannot read `{}`: {e}", users_file.display()),
        )
    })?;
    let users = parse_htpasswd(&file_bytes).map_err(|e| {
        v.err(
            &file_key,
            format!("`{}` line {}: {}", users_file.display(), e.line, e.message),
        )
    })?;
    if users.is_empty() {
        return Err(v.err(
            &file_key,
            format!(
                "`{}` has no users; add one with `htpasswd -B {} alice`",
                users_file.display(),
                users_file.display()
            ),
        ));
    }
    let realm = raw.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
    let challenge = challenge(&realm).ok_or_else(|| {
        v.err(
            format!("{key}.realm"),
            "the realm must be printable ASCII without `\"` or `\\`, e.g. `weir`",
        )
    })?;
    let user_header = match raw.user_header {
        Some(n) => {
            let at = format!("{key}.user_header");
            let name = super::headers::field_name(v, &at, &n)?;
            if name == http::header::AUTHORIZATION {
                return Err(v.err(at, "pick a field of its own, e.g. `X-Auth-User`"));
            }
            Some(name)
        }
        None => None,
    };
    Ok(BasicAuthConfig {
        users_file,
        file_bytes,
        users,
        realm,
        challenge,
        user_header,
        strip_authorization: raw.strip_authorization.unwrap_or(false),
    })
}

/// The `WWW-Authenticate` value for `realm` (RFC 7617 §2, with the
/// `charset` parameter of §2.1), or `None` if the realm cannot be quoted.
fn challenge(realm: &str) -> Option<HeaderValue> {
    if realm.is_empty()
        || realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return None;
    }
    HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")).ok()
}

/// Why an htpasswd file was refused, and on which line (1-based).
#[derive(Debug, PartialEq, Eq)]
pub struct HtpasswdError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// Parses an htpasswd file of bcrypt entries (see the module docs).
pub fn parse_htpasswd(bytes: &[u8]) -> Result<Vec<HtpasswdUser>, HtpasswdError> {
    let text = std::str::from_utf8(bytes).map_err(|e| HtpasswdError {
        line: bytes
            .get(..e.valid_up_to())
            .map_or(1, |ok| ok.iter().filter(|b| **b == b'\n').count() + 1),
        message: "the file is not UTF-8 text".to_owned(),
    })?;
    let mut users: Vec<HtpasswdUser> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let err = |message: String| HtpasswdError {
            line: i + 1,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(err(
                "expected `user:hash`; make the line with `htpasswd -B`".to_owned(),
            ));
        };
        if name.is_empty() || HeaderValue::from_str(name).is_err() {
            return Err(err(
                "the user name must be non-empty printable text".to_owned()
            ));
        }
        check_hash(name, hash).map_err(err)?;
        if users.iter().any(|u| u.name == name) {
            return Err(err(format!("user `{name}` is listed twice; keep one line")));
        }
        users.push(HtpasswdUser {
            name: name.to_owned(),
            hash: hash.to_owned(),
        });
    }
    Ok(users)
}

/// Accepts a bcrypt hash; names any other scheme.
fn check_hash(name: &str, hash: &str) -> Result<(), String> {
    let bcrypt = ["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p));
    if bcrypt {
        return match bcrypt::HashParts::from_str(hash) {
            Ok(p) if (4..=31).contains(&p.get_cost()) => Ok(()),
            _ => Err(format!(
                "user `{name}` has a malformed bcrypt hash; recreate it with `htpasswd -B`"
            )),
        };
    }
    let scheme = if hash.starts_with("$apr1$") {
        "an apr1 (MD5)"
    } else if hash.starts_with("{SHA}") {
        "a SHA-1"
    } else if hash.starts_with("$1$") || hash.starts_with("$5$") || hash.starts_with("$6$") {
        "a crypt(3)"
    } else if hash.len() == 13 {
        "a DES crypt (or plain text)"
    } else {
        "a plain-text or unknown"
    };
    Err(format!(
        "user `{name}` has {scheme} password; weir accepts only bcrypt hashes: \
         recreate the entry with `htpasswd -B <file> {name}`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";

    #[test]
    fn parses_bcrypt_entries_and_skips_comments_and_blank_lines() {
        let a = HASH.replacen("$2y$", "$2a$", 1);
        let b = HASH.replacen("$2y$", "$2b$", 1);
        let text = format!("# users\n\nalice:{HASH}\r\n  bob:{a}\ncarol:{b}\n");
        let users = parse_htpasswd(text.as_bytes()).unwrap();
        let names: Vec<_> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        assert_eq!(users.first().unwrap().hash, HASH);
        assert_eq!(parse_htpasswd(b"# only a comment\n").unwrap(), vec![]);
    }

    #[test]
    fn other_schemes_are_refused_with_their_line_and_the_command_to_use() {
        let cases = [
            ("bob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "apr1 (MD5)"),
            ("bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("bob:$6$salt$abcdef", "crypt(3)"),
            ("bob:rqXexS6ZhobKA", "DES crypt"),
            ("bob:hunter2", "plain-text"),
        ];
        for (line, scheme) in cases {
            let text = format!("alice:{HASH}\n# comment\n{line}\n");
            let e = parse_htpasswd(text.as_bytes()).unwrap_err();
            assert_eq!(e.line, 3, "{line}");
            assert!(e.message.contains(scheme), "{line}: {}", e.message);
            assert!(e.message.contains("htpasswd -B"), "{}", e.message);
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_their_line() {
        let bad = [
            "no colon here".to_owned(),
            format!(":{HASH}"),
            "alice:$2y$04$tooshort".to_owned(),
            format!("alice:{}", HASH.replacen("$04$", "$99$", 1)),
        ];
        for line in bad {
            let e = parse_htpasswd(format!("\n{line}\n").as_bytes()).unwrap_err();
            assert_eq!(e.line, 2, "{line}: {e:?}");
        }
        let twice = format!("alice:{HASH}\nalice:{HASH}\n");
        let e = parse_htpasswd(twice.as_bytes()).unwrap_err();
        assert_eq!((e.line, e.message.contains("twice")), (2, true));
        let e = parse_htpasswd(b"alice:x\n\xff\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn the_challenge_quotes_the_realm_and_refuses_what_cannot_be_quoted() {
        assert_eq!(
            challenge("my site").unwrap(),
            "Basic realm=\"my site\", charset=\"UTF-8\""
        );
        assert!(challenge("a\"b").is_none());
        assert!(challenge("a\\b").is_none());
        assert!(challenge("").is_none());
    }
}
