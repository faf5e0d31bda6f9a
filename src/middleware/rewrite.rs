//! `rewrite`: changes the path before the request is forwarded; the query
//! is kept. `strip_prefix` also tells the endpoint what was stripped in
//! `X-Forwarded-Prefix` (as Traefik does), so it can build links back.
//!
//! The result is always a valid path: it starts with `/`, and any byte a
//! path cannot hold as it is (a regex replacement may produce spaces, `?`,
//! `#` or non-ASCII) is percent-encoded, so the endpoint never reads the
//! target two ways.

use http::header::{HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Uri};

use crate::config::middleware::RewriteConfig;

use super::Request;

static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// A compiled `rewrite`.
#[derive(Debug)]
pub struct Rewrite {
    config: RewriteConfig,
}

impl Rewrite {
    /// The rewrite of `config`.
    pub fn new(config: &RewriteConfig) -> Self {
        Rewrite {
            config: config.clone(),
        }
    }

    /// The new path for `path`, or `None` when the rule does not match.
    pub fn path(&self, path: &str) -> Option<String> {
        let new = match &self.config {
            RewriteConfig::StripPrefix(p) => path.strip_prefix(p.as_str())?.to_owned(),
            RewriteConfig::ReplacePrefix { from, to } => {
                format!("{to}{}", path.strip_prefix(from.as_str())?)
            }
            RewriteConfig::Regex {
                pattern,
                replacement,
            } => {
                if !pattern.is_match(path) {
                    return None;
                }
                pattern.replace(path, replacement.as_str()).into_owned()
            }
        };
        Some(valid_path(&new))
    }

    pub(super) fn apply(&self, req: &mut Request<'_>) {
        let Some(path) = self.path(req.uri.path()) else {
            return;
        };
        let target = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let Ok(pq) = PathAndQuery::try_from(target) else {
            return;
        };
        let mut parts = std::mem::take(req.uri).into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri = uri;
        }
        if let RewriteConfig::StripPrefix(p) = &self.config {
            if let Ok(v) = HeaderValue::from_str(p) {
                req.fields.set(X_FORWARDED_PREFIX.clone(), v);
            }
        }
    }
}

/// `path` with a leading `/`, and every byte outside RFC 3986 `pchar`
/// and `/` percent-encoded (an existing `%XX` is kept).
pub(super) fn valid_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    encode_into(&mut out, path, b"/");
    out
}

/// Appends `part` to `out` with every byte that is neither `pchar` nor in
/// `also` percent-encoded; an existing `%XX` escape is kept as it is.
pub(super) fn encode_into(out: &mut String, part: &str, also: &[u8]) {
    let bytes = part.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let escape_ok = b == b'%'
            && bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if is_pchar(b) || also.contains(&b) || escape_ok {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// RFC 3986 `pchar` without `%`: unreserved, sub-delims, `:` and `@`.
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(c: RewriteConfig) -> Rewrite {
        Rewrite::new(&c)
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let r = rw(RewriteConfig::StripPrefix("/api".into()));
        assert_eq!(r.path("/api/users").as_deref(), Some("/users"));
        assert_eq!(r.path("/api").as_deref(), Some("/"));
        assert_eq!(r.path("/apix").as_deref(), Some("/x"));
        assert_eq!(r.path("/other"), None);
    }

    #[test]
    fn replace_prefix_and_regex() {
        let r = rw(RewriteConfig::ReplacePrefix {
            from: "/v1".into(),
            to: "/v2".into(),
        });
        assert_eq!(r.path("/v1/items").as_deref(), Some("/v2/items"));
        let r = rw(RewriteConfig::Regex {
            pattern: regex::Regex::new(r"^/u/(\d+)$").unwrap(),
            replacement: "/users/$1".into(),
        });
        assert_eq!(r.path("/u/42").as_deref(), Some("/users/42"));
        assert_eq!(r.path("/u/x"), None);
    }

    #[test]
    fn a_replacement_cannot_make_an_invalid_path() {
        let r = rw(RewriteConfig::Regex {
            pattern: regex::Regex::new("^/(.*)$").unwrap(),
            replacement: "/a b?c#d/é/%41/%zz".into(),
        });
        assert_eq!(
            r.path("/x").as_deref(),
            Some("/a%20b%3Fc%23d/%C3%A9/%41/%25zz")
        );
        let r = rw(RewriteConfig::Regex {
            pattern: regex::Regex::new("^/x").unwrap(),
            replacement: "y".into(),
        });
        assert_eq!(r.path("/x/z").as_deref(), Some("/y/z"));
    }
}
