//! `ip_filter:` middleware config: allow and deny lists of client
//! addresses (IPv4 and IPv6 CIDRs, or single addresses).
//!
//! ```yaml
//! ip_filter:
//!   allow: [10.0.0.0/8, "2001:db8::/32"]
//!   deny: [10.6.6.0/24]
//! ```
//!
//! A client in `deny` is refused; otherwise, when `allow` is set, a client
//! outside it is refused; otherwise it passes. Deny wins, so a narrow deny
//! can cut a hole in a wide allow. The client address is the one the
//! top-level `trusted_proxies` rule gives (the socket peer unless the peer
//! is a trusted proxy); IPv4-mapped IPv6 peers (`::ffff:a.b.c.d`) match
//! IPv4 lists.

use serde::Deserialize;

use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// `ip_filter:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `allow` and/or `deny`"
)]
pub struct RawIpFilter {
    /// Only these may pass (when set).
    pub allow: Option<Vec<String>>,
    /// These never pass.
    pub deny: Option<Vec<String>>,
}

/// The validated `ip_filter:` middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct IpFilterConfig {
    /// Empty: everyone not denied passes.
    pub allow: Vec<ipnet::IpNet>,
    /// Refused whatever `allow` says.
    pub deny: Vec<ipnet::IpNet>,
}

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    raw: RawIpFilter,
) -> Result<IpFilterConfig, ConfigError> {
    let list = |what: &str, l: Option<Vec<String>>| {
        l.unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, s)| super::cidr(v, &format!("{key}.{what}[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()
    };
    let allow = list("allow", raw.allow)?;
    let deny = list("deny", raw.deny)?;
    if allow.is_empty() && deny.is_empty() {
        return Err(v.err(key, "nothing to filter: add `allow:` and/or `deny:` lists"));
    }
    Ok(IpFilterConfig { allow, deny })
}
