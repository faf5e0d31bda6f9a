//! `redirect:` middleware config: answer with a redirect to another
//! scheme, host, port or path; the query is kept.
//!
//! ```yaml
//! redirect: { scheme: https, status: 308 }
//! redirect: { host: www.example.com, status: 301 }
//! redirect: { replace_prefix: { from: /old, to: /new } }
//! ```
//!
//! `status` is 301, 302, 307 or 308 (default 302, as Traefik and Caddy).
//! A request already at the target (an HTTPS request to a scheme
//! redirect) passes on, so one route can serve both listeners.

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// `redirect:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `scheme`, `host`, `port`, `path` or `replace_prefix`, and `status`"
)]
pub struct RawRedirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// The new host (no port).
    pub host: Option<String>,
    /// The new port.
    pub port: Option<u16>,
    /// The new path (replaces the whole path).
    pub path: Option<String>,
    /// A path prefix replaced.
    pub replace_prefix: Option<super::rewrite::RawReplacePrefix>,
    /// 301, 302, 307 or 308.
    pub status: Option<u16>,
}

/// The validated `redirect:` middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct RedirectConfig {
    /// `Some("https")`: the new scheme.
    pub scheme: Option<&'static str>,
    /// The new host.
    pub host: Option<String>,
    /// The new port; `None` keeps the request's, except that a scheme
    /// change drops it (the new scheme's default port).
    pub port: Option<u16>,
    /// How the path changes.
    pub path: PathChange,
    /// The redirect status.
    pub status: http::StatusCode,
}

/// What a redirect does to the path.
#[derive(Clone, Debug, PartialEq)]
pub enum PathChange {
    /// Kept.
    Keep,
    /// Replaced whole.
    Replace(String),
    /// `from` at the start replaced with `to`; other paths kept.
    ReplacePrefix {
        /// The prefix matched.
        from: String,
        /// Its replacement.
        to: String,
    },
}

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    raw: RawRedirect,
) -> Result<RedirectConfig, ConfigError> {
    let scheme = match raw.scheme.as_deref() {
        None => None,
        Some("https") => Some("https"),
        Some("http") => Some("http"),
        Some(other) => {
            return Err(v.err(
                format!("{key}.scheme"),
                format!("`{other}` is not a scheme weir redirects to; use `https` or `http`"),
            ))
        }
    };
    if let Some(h) = &raw.host {
        if h.is_empty() || !crate::http1::is_reg_name(h.as_bytes()) || h.contains(':') {
            return Err(v.err(
                format!("{key}.host"),
                format!("`{h}` is not a host name (no port, scheme or path; use `port:`)"),
            ));
        }
    }
    if raw.port == Some(0) {
        return Err(v.err(format!("{key}.port"), "port must be 1 to 65535"));
    }
    let path = path_change(v, key, raw.path, raw.replace_prefix)?;
    if scheme.is_none() && raw.host.is_none() && raw.port.is_none() && path == PathChange::Keep {
        return Err(v.err(
            key,
            "nothing to redirect to: set `scheme`, `host`, `port`, `path` or `replace_prefix`",
        ));
    }
    let status = match raw.status.unwrap_or(302) {
        s @ (301 | 302 | 307 | 308) => http::StatusCode::from_u16(s)
            .map_err(|_| v.err(format!("{key}.status"), "not a status"))?,
        other => {
            return Err(v.err(
                format!("{key}.status"),
                format!("{other} is not a redirect status; use 301, 302, 307 or 308"),
            ))
        }
    };
    Ok(RedirectConfig {
        scheme,
        host: raw.host.map(|h| h.to_ascii_lowercase()),
        port: raw.port,
        path,
        status,
    })
}

fn path_change(
    v: &Validator<'_>,
    key: &str,
    path: Option<String>,
    replace: Option<super::rewrite::RawReplacePrefix>,
) -> Result<PathChange, ConfigError> {
    let check = |at: String, p: &str| {
        if !p.starts_with('/')
            || p.contains(['?', '#'])
            || p.bytes().any(|b| b <= b' ' || b == 0x7f)
        {
            return Err(v.err(
                at,
                format!("`{p}` must be a path starting with `/`, without `?`, `#` or spaces"),
            ));
        }
        Ok(())
    };
    match (path, replace) {
        (Some(_), Some(_)) => Err(v.err(
            format!("{key}.path"),
            "use either `path` or `replace_prefix`, not both",
        )),
        (Some(p), None) => {
            check(format!("{key}.path"), &p)?;
            Ok(PathChange::Replace(p))
        }
        (None, Some(r)) => {
            check(format!("{key}.replace_prefix.from"), &r.from)?;
            check(format!("{key}.replace_prefix.to"), &r.to)?;
            Ok(PathChange::ReplacePrefix {
                from: r.from,
                to: r.to,
            })
        }
        (None, None) => Ok(PathChange::Keep),
    }
}
