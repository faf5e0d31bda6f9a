//! `dns` source: A, AAAA or SRV records, re-resolved as their TTL runs out.
//!
//! **Resolver.** Queries go to `resolver` (`ip:port`, over UDP with TCP
//! fallback) when it is set, and to the system's resolvers
//! (`/etc/resolv.conf`, with its search domains and `/etc/hosts`)
//! otherwise. Each query waits at most `timeout` and is tried twice.
//!
//! **No cache.** The resolver library's own cache is turned off (and
//! cleared before every refresh): this source already waits for the TTL
//! before asking again, so a second cache could only hand back an answer
//! it was about to expire, or, for a record changed under a short TTL, an
//! old one. Every refresh really asks the DNS server.
//!
//! **Cadence.** The first refresh resolves at once. Each later one starts
//! `clamp(lowest TTL in the answer, min_interval, max_interval)` after the
//! previous answer arrived: `min_interval` keeps a TTL of 0 or 1 from
//! turning into a query storm, `max_interval` makes weir notice changes
//! within a bound even under day-long TTLs. A negative answer is re-asked
//! after its negative TTL (from the SOA), clamped the same way. With
//! `max_stale` set, refreshes are also at most [`super::contact_interval`]
//! apart: an unchanged answer is a successful contact, and `max_stale`
//! counts from the last one. After an error the generic driver backs off
//! and the next refresh asks at once.
//!
//! **Answers.** For A and AAAA, every address becomes an endpoint on the
//! configured `port`, weight 1, priority 0. For SRV, every record's target
//! is resolved to its addresses (A and AAAA): from the additional records
//! of the SRV answer when the server sent them, by a lookup otherwise. Each
//! address becomes an endpoint on the record's port, with
//!
//! * weight = the SRV weight, except that **weight 0 becomes 1**: RFC 2782
//!   reserves 0 for "almost never, when others exist", which a weighted
//!   balancer has no way to say, and never sending traffic at all would be
//!   the worse surprise;
//! * priority = the SRV priority: endpoints are grouped in **failover
//!   tiers**, and the pool sends everything to the lowest-numbered tier
//!   that has an available endpoint (see [`crate::upstream::Pool`]).
//!
//! A target whose name has no addresses (NXDOMAIN, or no A/AAAA records) is
//! skipped with a warning, and so is a record on port 0 or with the target
//! `.` (RFC 2782: "service decidedly not available"); the set is what did
//! resolve.
//!
//! **Errors.** NXDOMAIN or an answer without records is a *successful,
//! empty* set: the registry says there is nothing (see [`super`]). A
//! timeout, a network error, SERVFAIL, REFUSED and the like are
//! [`DiscoveryError::Unreachable`], including while resolving an SRV
//! target (dropping that target's endpoints because one packet was lost
//! would be wrong), and the driver keeps the last good set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use tokio::time::Instant;

use super::{Discovery, DiscoveryError, EndpointSet, Update};
use crate::config::{DnsConfig, DnsRecord};

/// Tries per query: one retry absorbs a lost UDP packet without making an
/// unreachable server cost many timeouts.
const ATTEMPTS: usize = 2;

/// Resolves one DNS name.
pub struct Dns {
    config: DnsConfig,
    /// Built on the first refresh, and again after a failure to build it
    /// (e.g. an unreadable `/etc/resolv.conf`), so that is retried too.
    resolver: Option<TokioResolver>,
    /// When the current answer expires; `None` means "ask at once".
    next_at: Option<Instant>,
    /// Ask at least this often (see [`super::contact_interval`]).
    contact_every: Option<Duration>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("config", &self.config)
            .field("next_at", &self.next_at)
            .finish_non_exhaustive()
    }
}

/// A resolved answer: the set and the lowest TTL seen in it, if any.
struct Answer {
    set: EndpointSet,
    ttl: Option<u32>,
}

impl Dns {
    /// A source that resolves `config.name` at once, then as TTLs expire.
    pub fn new(config: DnsConfig) -> Self {
        Dns {
            config,
            resolver: None,
            next_at: None,
            contact_every: None,
        }
    }

    /// Re-resolves at least every `every`, whatever the TTL says.
    pub fn contact_every(mut self, every: Option<Duration>) -> Self {
        self.contact_every = every;
        self
    }

    fn resolver(&mut self) -> Result<&TokioResolver, DiscoveryError> {
        let resolver = match self.resolver.take() {
            Some(r) => r,
            None => build_resolver(&self.config)?,
        };
        Ok(self.resolver.insert(resolver))
    }

    async fn resolve(&mut self) -> Result<Answer, DiscoveryError> {
        let name = Name::from_str(&self.config.name).map_err(|e| {
            DiscoveryError::BadAnswer(format!("`{}` is not a DNS name: {e}", self.config.name))
        })?;
        let record = self.config.record;
        let port = self.config.port;
        let resolver = self.resolver()?;
        // The cache is sized 0, but clearing it too makes "every refresh
        // asks the server" hold whatever the cache does with size 0.
        resolver.clear_cache();
        match record {
            DnsRecord::A | DnsRecord::Aaaa => {
                let port = port.ok_or_else(|| {
                    DiscoveryError::BadAnswer("A and AAAA records need a `port`".into())
                })?;
                let rtype = if record == DnsRecord::A {
                    RecordType::A
                } else {
                    RecordType::AAAA
                };
                let records = match lookup(resolver, name, rtype).await? {
                    Lookup::Records(r) => r,
                    Lookup::Negative(ttl) => {
                        return Ok(Answer {
                            set: EndpointSet::new(),
                            ttl,
                        })
                    }
                };
                let mut set = EndpointSet::new();
                for ip in records.iter().filter_map(ip_of) {
                    set.insert(SocketAddr::new(ip, port), 1, 0);
                }
                Ok(Answer {
                    set,
                    ttl: min_ttl(&records),
                })
            }
            DnsRecord::Srv => resolve_srv(resolver, name).await,
        }
    }
}

impl Discovery for Dns {
    async fn next(&mut self) -> Result<Update, DiscoveryError> {
        if let Some(at) = self.next_at.take() {
            tokio::time::sleep_until(at).await;
        }
        let answer = self.resolve().await?;
        let wait = refresh_after(
            answer.ttl,
            self.config.min_interval,
            self.config.max_interval,
        );
        let wait = self.contact_every.map_or(wait, |every| wait.min(every));
        self.next_at = Some(Instant::now() + wait);
        Ok(Update::Set(answer.set))
    }
}

/// The resolver for `config`: its `resolver` or the system's, no cache.
fn build_resolver(config: &DnsConfig) -> Result<TokioResolver, DiscoveryError> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match config.resolver {
        Some(addr) => {
            // UDP and TCP to the one server; its NXDOMAIN is final.
            let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                provider,
            )
        }
        None => TokioResolver::builder(provider).map_err(|e| {
            DiscoveryError::Unreachable(format!("reading the system DNS configuration: {e}"))
        })?,
    };
    let opts = builder.options_mut();
    opts.cache_size = 0;
    opts.timeout = config.timeout;
    opts.attempts = ATTEMPTS;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    if config.resolver.is_some() {
        // An explicit server is the registry: `/etc/hosts` is not.
        opts.use_hosts_file = ResolveHosts::Never;
    }
    Ok(builder.build())
}

/// A lookup's outcome that is not an error.
enum Lookup {
    /// The answer's records (may include CNAMEs and additional records).
    Records(Vec<Record>),
    /// NXDOMAIN or no records of the type, with the negative TTL if the
    /// server gave one.
    Negative(Option<u32>),
}

async fn lookup(
    resolver: &TokioResolver,
    name: Name,
    rtype: RecordType,
) -> Result<Lookup, DiscoveryError> {
    let shown = name.to_string();
    match resolver.lookup(name, rtype).await {
        Ok(l) => Ok(Lookup::Records(l.records().to_vec())),
        Err(e) => classify(&e)
            .map(Lookup::Negative)
            .ok_or_else(|| DiscoveryError::Unreachable(format!("{rtype} {shown}: {e}"))),
    }
}

/// `Some(negative TTL)` when the error is the server saying "no such
/// records" (NXDOMAIN, or NOERROR with no answer); `None` when it is a
/// failure to get an answer (timeout, network, SERVFAIL, REFUSED, ...).
fn classify(e: &ResolveError) -> Option<Option<u32>> {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound {
            response_code,
            negative_ttl,
            ..
        }) if is_negative(*response_code) => Some(*negative_ttl),
        _ => None,
    }
}

/// Response codes that mean "the name or its records do not exist".
fn is_negative(code: ResponseCode) -> bool {
    matches!(code, ResponseCode::NXDomain | ResponseCode::NoError)
}

/// The address in an A or AAAA record.
fn ip_of(r: &Record) -> Option<IpAddr> {
    match r.data() {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

fn min_ttl(records: &[Record]) -> Option<u32> {
    records.iter().map(Record::ttl).min()
}

/// One SRV record, as the mapping needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SrvTarget {
    priority: u16,
    weight: u16,
    port: u16,
    target: Name,
}

async fn resolve_srv(resolver: &TokioResolver, name: Name) -> Result<Answer, DiscoveryError> {
    let records = match lookup(resolver, name.clone(), RecordType::SRV).await? {
        Lookup::Records(r) => r,
        Lookup::Negative(ttl) => {
            return Ok(Answer {
                set: EndpointSet::new(),
                ttl,
            })
        }
    };
    let mut ttl = min_ttl(&records);
    let srvs: Vec<SrvTarget> = records
        .iter()
        .filter_map(|r| match r.data() {
            RData::SRV(s) => Some(SrvTarget {
                priority: s.priority(),
                weight: s.weight(),
                port: s.port(),
                target: s.target().clone(),
            }),
            _ => None,
        })
        .collect();
    // Addresses the server sent along as additional records.
    let mut addrs = additional_addresses(&records);
    // Look up the rest, all at once.
    let missing: BTreeSet<Name> = srvs
        .iter()
        .filter(|s| !s.target.is_root() && !addrs.contains_key(&key(&s.target)))
        .map(|s| s.target.clone())
        .collect();
    let lookups = missing.into_iter().map(|target| async move {
        let result = resolver.lookup_ip(target.clone()).await;
        (target, result)
    });
    for (target, result) in futures_util::future::join_all(lookups).await {
        match result {
            Ok(ips) => {
                let records = ips.as_lookup().records();
                if let Some(t) = min_ttl(records) {
                    ttl = Some(ttl.map_or(t, |m| m.min(t)));
                }
                addrs.insert(key(&target), ips.iter().collect());
            }
            Err(e) => match classify(&e) {
                Some(_) => {
                    tracing::warn!(srv = %name, target = %target, "SRV target has no addresses; skipping it");
                }
                None => {
                    return Err(DiscoveryError::Unreachable(format!(
                        "resolving SRV target {target} of {name}: {e}"
                    )))
                }
            },
        }
    }
    Ok(Answer {
        set: srv_endpoints(&name, &srvs, &addrs),
        ttl,
    })
}

/// DNS names compare case-insensitively, and with or without the final dot.
fn key(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// A and AAAA records in an answer, by owner name.
fn additional_addresses(records: &[Record]) -> BTreeMap<String, Vec<IpAddr>> {
    let mut addrs: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for r in records {
        if let Some(ip) = ip_of(r) {
            addrs.entry(key(r.name())).or_default().push(ip);
        }
    }
    addrs
}

/// Maps SRV records and their targets' addresses to endpoints: port from
/// the record, weight from the record (0 becomes 1), priority from the
/// record. Records without addresses are skipped.
fn srv_endpoints(
    name: &Name,
    srvs: &[SrvTarget],
    addrs: &BTreeMap<String, Vec<IpAddr>>,
) -> EndpointSet {
    let mut set = EndpointSet::new();
    for s in srvs {
        if s.target.is_root() {
            tracing::debug!(srv = %name, "SRV target `.`: service not available there");
            continue;
        }
        if s.port == 0 {
            tracing::warn!(srv = %name, target = %s.target, "SRV record with port 0; skipping it");
            continue;
        }
        let Some(ips) = addrs.get(&key(&s.target)) else {
            // Already warned about when its lookup came back empty.
            continue;
        };
        for ip in ips {
            set.insert(
                SocketAddr::new(*ip, s.port),
                u32::from(s.weight.max(1)),
                s.priority,
            );
        }
    }
    set
}

/// How long to wait before re-resolving: the TTL (or `min` when the answer
/// gave none), kept within `[min, max]`. `max` wins if they cross.
fn refresh_after(ttl: Option<u32>, min: Duration, max: Duration) -> Duration {
    let ttl = ttl.map_or(min, |t| Duration::from_secs(u64::from(t)));
    ttl.max(min).min(max)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use hickory_resolver::proto::rr::rdata::{A, AAAA};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn n(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port,
            target: n(target),
        }
    }

    #[test]
    fn ttl_is_clamped_to_the_intervals() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(refresh_after(Some(0), min, max), min);
        assert_eq!(refresh_after(Some(30), min, max), Duration::from_secs(30));
        assert_eq!(refresh_after(Some(86_400), min, max), max);
        assert_eq!(refresh_after(None, min, max), min);
        // Crossed bounds do not panic; the upper one wins.
        assert_eq!(
            refresh_after(Some(5), Duration::from_secs(10), Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn srv_records_map_to_weighted_tiered_endpoints() {
        let srvs = [
            srv(10, 3, 8080, "a.weir.test."),
            srv(10, 0, 8081, "B.Weir.Test"),
            srv(20, 1, 8082, "c.weir.test."),
            srv(10, 5, 0, "a.weir.test."),
            srv(10, 5, 9000, "."),
            srv(10, 5, 9001, "missing.weir.test."),
        ];
        let mut addrs = BTreeMap::new();
        addrs.insert(
            "a.weir.test.".to_owned(),
            vec![
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
        );
        addrs.insert(
            "b.weir.test.".to_owned(),
            vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))],
        );
        addrs.insert(
            "c.weir.test.".to_owned(),
            vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))],
        );
        let set = srv_endpoints(&n("_http._tcp.svc.weir.test."), &srvs, &addrs);
        let get = |a: &str| {
            set.0
                .get(&a.parse().unwrap())
                .map(|e| (e.weight, e.priority))
        };
        assert_eq!(set.len(), 4, "{set:?}");
        assert_eq!(get("10.0.0.1:8080"), Some((3, 10)));
        assert_eq!(get("[::1]:8080"), Some((3, 10)));
        // Weight 0 becomes 1; names match case-insensitively.
        assert_eq!(get("10.0.0.2:8081"), Some((1, 10)));
        assert_eq!(get("10.0.0.3:8082"), Some((1, 20)));
    }

    #[test]
    fn additional_records_are_grouped_by_owner() {
        let records = vec![
            Record::from_rdata(n("A.weir.test."), 5, RData::A(A::new(10, 0, 0, 1))),
            Record::from_rdata(
                n("a.weir.test."),
                7,
                RData::AAAA(AAAA::from(Ipv6Addr::LOCALHOST)),
            ),
            Record::from_rdata(n("b.weir.test."), 3, RData::A(A::new(10, 0, 0, 2))),
        ];
        let addrs = additional_addresses(&records);
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs["a.weir.test."].len(), 2);
        assert_eq!(min_ttl(&records), Some(3));
    }

    #[test]
    fn only_negative_answers_count_as_empty() {
        assert!(is_negative(ResponseCode::NXDomain));
        assert!(is_negative(ResponseCode::NoError));
        assert!(!is_negative(ResponseCode::ServFail));
        assert!(!is_negative(ResponseCode::Refused));
        let timeout = ResolveError::from(hickory_resolver::proto::ProtoError::from(
            ProtoErrorKind::Timeout,
        ));
        assert_eq!(classify(&timeout), None);
    }
}
