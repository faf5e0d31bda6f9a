//! The client's address as middleware (`rate_limit`, `ip_filter`) see it.
//!
//! The socket peer, unless the peer is one of the top-level
//! `trusted_proxies`: then `X-Forwarded-For` is read from the right (the
//! entry the nearest proxy appended) leftwards, skipping entries that are
//! themselves trusted proxies, and the first untrusted one is the client.
//! This is nginx's `real_ip_header X-Forwarded-For` with
//! `real_ip_recursive on`, and Envoy's `xff_num_trusted_hops` by CIDR:
//! entries left of the first untrusted one could be written by anyone, so
//! they are never believed. An entry that is not an address stops the walk
//! at the last address found (the peer, if none). Every line of the field
//! counts, as one list (RFC 9110 §5.3). IPv4-mapped IPv6 addresses are
//! taken as the IPv4 address they carry.

use std::net::IpAddr;

use http::header::HeaderName;

use super::Fields;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address for a request from `peer` with these fields.
pub fn resolve(peer: IpAddr, trusted: &[ipnet::IpNet], fields: &Fields<'_>) -> IpAddr {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let lines: Vec<&[u8]> = fields.get_all(&X_FORWARDED_FOR).collect();
    let mut client = peer;
    for line in lines.iter().rev() {
        let Ok(line) = std::str::from_utf8(line) else {
            return client;
        };
        for entry in line.rsplit(',') {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !is_trusted(ip, trusted) {
                return ip;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, optionally with a port
/// (`1.2.3.4:5`, `[2001:db8::1]:5`), as some proxies write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse().ok().map(canonical);
    }
    let (ip, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, a dual-stack socket's IPv4 peer)
/// as IPv4, so IPv4 lists match it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is in one of `nets`.
pub fn is_trusted(ip: IpAddr, nets: &[ipnet::IpNet]) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn client(peer: &str, trusted: &[&str], xff: &[&str]) -> IpAddr {
        let mut map = HeaderMap::new();
        for v in xff {
            map.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        resolve(
            peer.parse().unwrap(),
            &nets(trusted),
            &Fields::new(&mut map, None),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        assert_eq!(client("203.0.113.9", &[], &["1.1.1.1"]), ip("203.0.113.9"));
        assert_eq!(
            client("203.0.113.9", &["10.0.0.0/8"], &["1.1.1.1"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_client_in_x_forwarded_for() {
        let t = &["10.0.0.0/8"];
        assert_eq!(client("10.0.0.2", t, &["198.51.100.7"]), ip("198.51.100.7"));
        // Spoofed entries left of the first untrusted one are ignored.
        assert_eq!(
            client("10.0.0.2", t, &["6.6.6.6, 198.51.100.7, 10.1.1.1"]),
            ip("198.51.100.7")
        );
        // Several lines are one list, read from the last.
        assert_eq!(
            client("10.0.0.2", t, &["6.6.6.6", "198.51.100.7", "10.9.9.9"]),
            ip("198.51.100.7")
        );
        // All trusted: the leftmost.
        assert_eq!(
            client("10.0.0.2", t, &["10.3.3.3, 10.1.1.1"]),
            ip("10.3.3.3")
        );
        // None: the peer.
        assert_eq!(client("10.0.0.2", t, &[]), ip("10.0.0.2"));
    }

    #[test]
    fn junk_stops_the_walk_at_the_last_address() {
        let t = &["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.2", t, &["1.2.3.4, junk, 10.1.1.1"]),
            ip("10.1.1.1")
        );
        assert_eq!(client("10.0.0.2", t, &["unknown"]), ip("10.0.0.2"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses() {
        let t = &["10.0.0.0/8"];
        assert_eq!(
            client("10.0.0.2", t, &["198.51.100.7:4711"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.2", t, &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
        assert_eq!(
            client("::ffff:10.0.0.2", t, &["2001:db8::5"]),
            ip("2001:db8::5")
        );
        assert_eq!(client("::ffff:192.0.2.1", &[], &[]), ip("192.0.2.1"));
    }
}
