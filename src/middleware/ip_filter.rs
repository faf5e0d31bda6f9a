//! `ip_filter`: refuses clients by address (403). Deny wins over allow;
//! an `allow` list, when set, admits only its members (see
//! `crate::config::middleware::ip_filter`). The address is the client's by
//! the `trusted_proxies` rule ([`super::client_ip`]).

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::middleware::IpFilterConfig;
use crate::error::{Refusal, RefusalKind};

use super::client_ip::is_trusted as listed;
use super::Request;

/// A compiled `ip_filter`.
#[derive(Debug)]
pub struct IpFilter {
    allow: Vec<ipnet::IpNet>,
    deny: Vec<ipnet::IpNet>,
}

impl IpFilter {
    /// The filter of `config`.
    pub fn new(config: &IpFilterConfig) -> Self {
        IpFilter {
            allow: config.allow.clone(),
            deny: config.deny.clone(),
        }
    }

    /// Why `ip` is refused, if it is.
    pub fn verdict(&self, ip: IpAddr) -> Option<&'static str> {
        if listed(ip, &self.deny) {
            return Some("denied");
        }
        if !self.allow.is_empty() && !listed(ip, &self.allow) {
            return Some("not_allowed");
        }
        None
    }

    pub(super) fn apply(
        &self,
        name: &Arc<str>,
        req: &mut Request<'_>,
        trusted: &[ipnet::IpNet],
    ) -> Result<(), Box<Refusal>> {
        let ip = req.client_ip(trusted);
        match self.verdict(ip) {
            None => Ok(()),
            Some(reason) => Err(Box::new(Refusal::new(name, RefusalKind::Forbidden, reason))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], deny: &[&str]) -> IpFilter {
        let nets = |l: &[&str]| l.iter().map(|s| s.parse().unwrap()).collect();
        IpFilter::new(&IpFilterConfig {
            allow: nets(allow),
            deny: nets(deny),
        })
    }

    #[test]
    fn deny_wins_and_allow_admits_only_its_members() {
        let f = filter(&["10.0.0.0/8", "2001:db8::/32"], &["10.6.6.0/24"]);
        assert_eq!(f.verdict("10.1.2.3".parse().unwrap()), None);
        assert_eq!(f.verdict("2001:db8::9".parse().unwrap()), None);
        assert_eq!(f.verdict("10.6.6.6".parse().unwrap()), Some("denied"));
        assert_eq!(f.verdict("192.0.2.1".parse().unwrap()), Some("not_allowed"));
        assert_eq!(
            f.verdict("2001:db9::1".parse().unwrap()),
            Some("not_allowed")
        );
        let deny_only = filter(&[], &["192.0.2.0/24"]);
        assert_eq!(
            deny_only.verdict("192.0.2.8".parse().unwrap()),
            Some("denied")
        );
        assert_eq!(deny_only.verdict("198.51.100.1".parse().unwrap()), None);
    }
}
