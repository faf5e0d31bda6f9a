//! `middleware:`: named request policies, defined once at the top level
//! and listed per route (`routes[].middleware: [name, ...]`), in order.
//!
//! Each entry has a `name` and exactly one kind key, as in Traefik:
//!
//! ```yaml
//! middleware:
//!   - name: strip-api
//!     rewrite: { strip_prefix: /api }
//! ```
//!
//! Every kind has its own file here with its raw (serde) shape, its
//! validated shape and its checks; the runtime side is `crate::middleware`.
//! Validated configs compare with `==`, which is how a reload tells an
//! unchanged middleware (whose state survives) from a changed one.

use serde::Deserialize;

use super::error::ConfigError;
use super::validate::Validator;

pub mod basic_auth;
pub mod forward_auth;
pub mod headers;
pub mod ip_filter;
pub mod jwt;
pub mod rate_limit;
pub mod redirect;
pub mod rewrite;

pub use basic_auth::BasicAuthConfig;
pub use forward_auth::ForwardAuthConfig;
pub use headers::{HeaderOps, HeadersConfig};
pub use ip_filter::IpFilterConfig;
pub use jwt::JwtConfig;
pub use rate_limit::{RateKey, RateLimitConfig};
pub use redirect::RedirectConfig;
pub use rewrite::RewriteConfig;

/// One entry of `middleware:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a middleware mapping with `name` and one kind, e.g. `rewrite: {strip_prefix: /api}`"
)]
pub struct RawMiddleware {
    /// Unique name, listed by routes.
    pub name: String,
    /// `headers:`.
    pub headers: Option<headers::RawHeadersMiddleware>,
    /// `rewrite:`.
    pub rewrite: Option<rewrite::RawRewrite>,
    /// `redirect:`.
    pub redirect: Option<redirect::RawRedirect>,
    /// `ip_filter:`.
    pub ip_filter: Option<ip_filter::RawIpFilter>,
    /// `rate_limit:`.
    pub rate_limit: Option<rate_limit::RawRateLimit>,
    /// `basic_auth:`.
    pub basic_auth: Option<basic_auth::RawBasicAuth>,
    /// `forward_auth:`.
    pub forward_auth: Option<forward_auth::RawForwardAuth>,
    /// `jwt:`.
    pub jwt: Option<jwt::RawJwt>,
}

/// The kind keys, for messages.
const KINDS: &str = "`headers`, `rewrite`, `redirect`, `ip_filter`, `rate_limit`, `basic_auth`, \
                     `forward_auth`, `jwt`";

impl RawMiddleware {
    /// How many kind keys the entry sets (validation wants exactly one).
    fn kinds(&self) -> usize {
        [
            self.headers.is_some(),
            self.rewrite.is_some(),
            self.redirect.is_some(),
            self.ip_filter.is_some(),
            self.rate_limit.is_some(),
            self.basic_auth.is_some(),
            self.forward_auth.is_some(),
            self.jwt.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count()
    }
}

/// One validated middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct MiddlewareConfig {
    /// Unique name (metrics label `middleware`, access-log field).
    pub name: String,
    /// What it does.
    pub kind: MiddlewareKind,
}

/// The kinds of middleware.
#[derive(Clone, Debug, PartialEq)]
pub enum MiddlewareKind {
    /// Set, add or remove request and response fields.
    Headers(HeadersConfig),
    /// Change the request's path before it is forwarded.
    Rewrite(RewriteConfig),
    /// Answer with a redirect to another scheme, host or path.
    Redirect(RedirectConfig),
    /// Allow and deny client addresses.
    IpFilter(IpFilterConfig),
    /// Refuse requests over a rate (429), per client, header or route.
    RateLimit(RateLimitConfig),
    /// HTTP Basic authentication against an htpasswd file.
    BasicAuth(BasicAuthConfig),
    /// Ask an auth service about each request.
    ForwardAuth(ForwardAuthConfig),
    /// Verify bearer tokens (JWT) against a JWKS or a secret.
    Jwt(JwtConfig),
}

impl MiddlewareKind {
    /// The files this middleware read when the config was loaded (an
    /// htpasswd file, a secret), with their bytes as read: they are part
    /// of the config's version hash, and the reloader watches them as it
    /// watches certificates, so an edit reloads the config.
    pub fn files(&self) -> Vec<(&std::path::Path, &[u8])> {
        match self {
            MiddlewareKind::BasicAuth(b) => vec![(b.users_file.as_path(), b.file_bytes.as_slice())],
            MiddlewareKind::Headers(_)
            | MiddlewareKind::Rewrite(_)
            | MiddlewareKind::Redirect(_)
            | MiddlewareKind::IpFilter(_)
            | MiddlewareKind::RateLimit(_) => Vec::new(),
            MiddlewareKind::ForwardAuth(f) => {
                f.ca.iter()
                    .map(|ca| (ca.path.as_path(), ca.pem.as_slice()))
                    .collect()
            }
            MiddlewareKind::Jwt(j) => j.files(),
        }
    }

    /// What an operator should know about this middleware (printed by
    /// `weir check`, logged at startup and reload).
    pub fn warnings(&self) -> Vec<String> {
        match self {
            MiddlewareKind::Jwt(j) => j.warnings(),
            _ => Vec::new(),
        }
    }

    /// The kind's key, as written in the config.
    pub fn key(&self) -> &'static str {
        match self {
            MiddlewareKind::Headers(_) => "headers",
            MiddlewareKind::Rewrite(_) => "rewrite",
            MiddlewareKind::Redirect(_) => "redirect",
            MiddlewareKind::IpFilter(_) => "ip_filter",
            MiddlewareKind::RateLimit(_) => "rate_limit",
            MiddlewareKind::BasicAuth(_) => "basic_auth",
            MiddlewareKind::ForwardAuth(_) => "forward_auth",
            MiddlewareKind::Jwt(_) => "jwt",
        }
    }
}

/// Validates `middleware:` (absent is an empty list).
pub(super) fn validate(
    v: &Validator<'_>,
    raw: Option<Vec<RawMiddleware>>,
) -> Result<Vec<MiddlewareConfig>, ConfigError> {
    let raw = raw.unwrap_or_default();
    let mut out: Vec<MiddlewareConfig> = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let key = format!("middleware[{i}]");
        v.name(&format!("{key}.name"), &m.name)?;
        if let Some(first) = out.iter().position(|o| o.name == m.name) {
            return Err(v.err(
                format!("{key}.name"),
                format!(
                    "duplicate middleware name `{}` (also used by middleware[{first}])",
                    m.name
                ),
            ));
        }
        match m.kinds() {
            1 => {}
            0 => {
                return Err(v.err(
                    key,
                    format!("middleware `{}` has no kind; add one of {KINDS}", m.name),
                ))
            }
            _ => {
                return Err(v.err(
                    key,
                    format!(
                        "middleware `{}` has more than one kind; give each its own entry \
                         and list them in order on the route",
                        m.name
                    ),
                ))
            }
        }
        let name = m.name.clone();
        let kind = kind(v, &key, m)?;
        out.push(MiddlewareConfig { name, kind });
    }
    Ok(out)
}

/// The one kind an entry sets (checked by the caller), validated.
fn kind(v: &Validator<'_>, key: &str, m: RawMiddleware) -> Result<MiddlewareKind, ConfigError> {
    if let Some(h) = m.headers {
        return headers::validate(v, &format!("{key}.headers"), h).map(MiddlewareKind::Headers);
    }
    if let Some(r) = m.rewrite {
        return rewrite::validate(v, &format!("{key}.rewrite"), r).map(MiddlewareKind::Rewrite);
    }
    if let Some(r) = m.redirect {
        return redirect::validate(v, &format!("{key}.redirect"), r).map(MiddlewareKind::Redirect);
    }
    if let Some(f) = m.ip_filter {
        return ip_filter::validate(v, &format!("{key}.ip_filter"), f)
            .map(MiddlewareKind::IpFilter);
    }
    if let Some(r) = m.rate_limit {
        return rate_limit::validate(v, &format!("{key}.rate_limit"), r)
            .map(MiddlewareKind::RateLimit);
    }
    if let Some(b) = m.basic_auth {
        return basic_auth::validate(v, &format!("{key}.basic_auth"), b)
            .map(MiddlewareKind::BasicAuth);
    }
    if let Some(f) = m.forward_auth {
        return forward_auth::validate(v, &format!("{key}.forward_auth"), f)
            .map(MiddlewareKind::ForwardAuth);
    }
    if let Some(j) = m.jwt {
        return jwt::validate(v, &format!("{key}.jwt"), &m.name, j).map(MiddlewareKind::Jwt);
    }
    Err(v.err(key, format!("add one of {KINDS}")))
}

/// Checks a route's `middleware:` list: every name defined, none twice.
pub(super) fn route_list(
    v: &Validator<'_>,
    key: &str,
    names: Option<Vec<String>>,
    defined: &[MiddlewareConfig],
) -> Result<Vec<String>, ConfigError> {
    let names = names.unwrap_or_default();
    for (j, name) in names.iter().enumerate() {
        let item = format!("{key}.middleware[{j}]");
        if names.iter().take(j).any(|n| n == name) {
            return Err(v.err(item, format!("middleware `{name}` is listed twice")));
        }
        if defined.iter().all(|m| m.name != *name) {
            let all = defined.iter().map(|m| m.name.as_str());
            let hint = match super::error::did_you_mean(name, all) {
                Some(best) => format!("; did you mean `{best}`?"),
                None => String::new(),
            };
            return Err(v.err(
                item,
                format!("middleware `{name}` is not defined under `middleware:`{hint}"),
            ));
        }
    }
    Ok(names)
}

/// Parses a CIDR (`10.0.0.0/8`, `2001:db8::/32`) or a bare address (a
/// host: `/32` or `/128`), as nginx's `allow` and `set_real_ip_from` do.
pub(super) fn cidr(v: &Validator<'_>, key: &str, s: &str) -> Result<ipnet::IpNet, ConfigError> {
    let s = s.trim();
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        if net.trunc() != net {
            return Err(v.err(
                key,
                format!("`{s}` has host bits set; the network is `{}`", net.trunc()),
            ));
        }
        return Ok(net);
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            v.err(
                key,
                format!("`{s}` is not an address or CIDR, e.g. `10.0.0.0/8` or `2001:db8::/32`"),
            )
        })
}

/// A CA bundle read at config load.
#[derive(Clone, PartialEq)]
pub struct CaFile {
    /// The file.
    pub path: std::path::PathBuf,
    /// Its PEM bytes as read (parsed once at load to check them).
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A CA bundle named at `key` (a config-relative path), read and parsed
/// now, so a bad file fails the load and its bytes are hashed and watched
/// (see [`MiddlewareKind::files`]).
pub(super) fn ca_file(v: &Validator<'_>, key: &str, value: &str) -> Result<CaFile, ConfigError> {
    let path = v.path(key, value)?;
    let (_, pem) = crate::tls::load_roots(&path).map_err(|e| v.err(key, e))?;
    Ok(CaFile { path, pem })
}

/// Validates `trusted_proxies:` (absent is none: the client is the peer).
pub(super) fn trusted_proxies(
    v: &Validator<'_>,
    raw: Option<Vec<String>>,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    raw.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, s)| cidr(v, &format!("trusted_proxies[{i}]"), s))
        .collect()
}
