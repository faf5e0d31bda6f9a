//! `rate_limit`: refuses requests over a rate with 429, per client
//! address, per request-field value, or per route (see
//! `crate::config::middleware::rate_limit` for the keys and defaults).
//!
//! **Algorithm.** GCRA (the generic cell rate algorithm), which is a token
//! bucket kept as one number per key: the *theoretical arrival time* (TAT)
//! at which the bucket would be full again. A request at `now` is admitted
//! when `max(TAT, now) + T - now <= burst * T`, with `T = period /
//! average`, and then moves the TAT on by `T`; a refused request changes
//! nothing. It admits exactly what a bucket of `burst` tokens refilled one
//! token every `T` admits, without a timer or a refill loop. Time is kept
//! in units of `1 / average` nanoseconds (so `T` is exactly `period` in
//! those units), which keeps the counts exact for any `average`, with no
//! rounding of `period / average`. The limiter is pure: the caller passes
//! `now` (the request's arrival, a `tokio::time::Instant`), so it is tested
//! on a synthetic clock.
//!
//! **Bounded state.** Buckets live in LRU maps (the `lru` crate), split
//! over up to 16 shards by key hash, each behind a `std::sync::Mutex`
//! held only for one lookup and update (never across an `.await`). Each
//! shard holds `max_keys / shards` buckets and evicts its least recently
//! seen one to make room, so the total never exceeds `max_keys` whatever
//! the number of distinct keys. Eviction is least-recently-seen per shard,
//! so globally approximate; an evicted key comes back with a full bucket.
//! `governor`, the usual Rust rate-limit crate, was not used: its keyed
//! limiter (a `DashMap`) only shrinks when `retain_recent` is called, so a
//! scan of spoofed keys grows it without bound between sweeps (and its
//! clocks would need an adapter for tokio's pausable `Instant`). GCRA
//! itself is a few lines of arithmetic; the LRU bookkeeping is the part
//! worth a crate.
//!
//! **Keys.** A bucket is per route and subject, so one middleware listed
//! by two routes limits each route on its own (Traefik's per-router
//! model). The subject is the client address (by the `trusted_proxies`
//! rule, so `X-Forwarded-For` counts only from a trusted proxy), nothing
//! (`key: route`), or the first value of a request field (trimmed). Field
//! values are kept as a 64-bit keyed hash (SipHash with a per-instance
//! random key), so a long value costs no more memory than a short one and
//! nobody can craft two values that share a bucket; requests without the
//! field share one bucket, so leaving it out is no way around the limit.
//!
//! **Answer.** Over the limit: 429 (counted in `weir_rate_limited_total`
//! and in `weir_middleware_rejections_total` with reason `over_limit`),
//! with `Retry-After` (RFC 9110 §10.2.3: whole seconds until the next
//! request would be admitted, rounded up) and the fields of
//! draft-ietf-httpapi-ratelimit-headers in the separate-field form of its
//! drafts up to -06, as most proxies and APIs send them:
//! `RateLimit-Limit` (the burst, the most requests admitted at once),
//! `RateLimit-Remaining` (0) and `RateLimit-Reset` (whole seconds, rounded
//! up, until the bucket is full again). Admitted requests carry no extra
//! fields: the response side of middleware only applies configured edits.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use lru::LruCache;
use tokio::time::Instant;

use crate::config::middleware::{RateKey, RateLimitConfig};
use crate::error::{Refusal, RefusalKind};

use super::{Env, Request};

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// At most this many shards (fewer when `max_keys` is smaller).
const SHARDS: usize = 16;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A compiled `rate_limit`.
#[derive(Debug)]
pub struct RateLimit {
    limiter: Limiter,
    key: RateKey,
}

impl RateLimit {
    /// The rate limit of `config`, with every bucket full.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimit {
            limiter: Limiter::new(config, Instant::now()),
            key: config.key.clone(),
        }
    }

    /// How many buckets are kept (at most `max_keys`).
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    pub(super) fn apply(
        &self,
        name: &Arc<str>,
        req: &mut Request<'_>,
        env: &Env<'_>,
    ) -> Result<(), Box<Refusal>> {
        let subject = match &self.key {
            RateKey::ClientIp => Subject::Ip(req.client_ip(env.trusted)),
            RateKey::Route => Subject::Route,
            RateKey::Header(h) => match req.fields.get(h) {
                Some(v) => Subject::Header(self.limiter.digest(v.trim_ascii())),
                None => Subject::NoHeader,
            },
        };
        let key = Key {
            route: Arc::clone(env.route),
            subject,
        };
        let decision = self.limiter.check(key, req.now);
        if decision.admitted {
            return Ok(());
        }
        env.metrics.rate_limited();
        Err(Box::new(refusal(name, &decision)))
    }
}

/// The 429 for a refused request.
fn refusal(name: &Arc<str>, d: &Decision) -> Refusal {
    let mut r = Refusal::new(name, RefusalKind::RateLimited, "over_limit");
    let h = &mut r.headers;
    h.insert(RETRY_AFTER, HeaderValue::from(d.retry_after));
    h.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(d.limit));
    h.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(d.remaining));
    h.insert(RATELIMIT_RESET.clone(), HeaderValue::from(d.reset));
    r
}

/// Whose bucket a request draws from: a route and a subject.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The route's name.
    pub route: Arc<str>,
    /// Who, within the route.
    pub subject: Subject,
}

/// Who a bucket is for, within a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A client address.
    Ip(IpAddr),
    /// A request-field value, as [`Limiter::digest`] gives it.
    Header(u64),
    /// Requests without the field.
    NoHeader,
    /// The whole route.
    Route,
}

/// What the limiter said about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether it may go on.
    pub admitted: bool,
    /// The burst: the most requests a full bucket admits at once.
    pub limit: u32,
    /// Requests admitted right after this one without waiting.
    pub remaining: u32,
    /// Whole seconds (rounded up) until a request would be admitted; 0
    /// when this one was.
    pub retry_after: u64,
    /// Whole seconds (rounded up) until the bucket is full again.
    pub reset: u64,
}

/// GCRA buckets in bounded LRU shards (see the module docs).
#[derive(Debug)]
pub struct Limiter {
    /// Time 0 of the bucket arithmetic.
    epoch: Instant,
    /// Requests per period; time is counted in `1 / average` ns.
    average: u128,
    /// The emission interval `T` in those units: the period in ns.
    interval: u128,
    /// `burst * T`: how far ahead of `now` the TAT may run.
    tolerance: u128,
    burst: u32,
    /// Buckets per shard.
    per_shard: usize,
    shards: Box<[Mutex<LruCache<Key, u128>>]>,
    hasher: RandomState,
}

impl Limiter {
    /// A limiter for `config` whose clock starts at `epoch`.
    pub fn new(config: &RateLimitConfig, epoch: Instant) -> Self {
        let average = u128::from(config.average.max(1));
        let interval = config.period.as_nanos().max(1);
        let burst = config.burst.max(1);
        let max_keys = config.max_keys.max(1);
        let shards = max_keys.min(SHARDS);
        Limiter {
            epoch,
            average,
            interval,
            tolerance: interval.saturating_mul(u128::from(burst)),
            burst,
            per_shard: max_keys / shards,
            // Unbounded maps, trimmed by hand: `LruCache::new(cap)`
            // allocates its capacity up front, and most limiters see far
            // fewer keys than `max_keys`.
            shards: (0..shards)
                .map(|_| Mutex::new(LruCache::unbounded()))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// A request-field value as a bucket subject.
    pub fn digest(&self, value: &[u8]) -> u64 {
        self.hasher.hash_one(value)
    }

    /// Admits or refuses one request of `key` arriving at `now`.
    pub fn check(&self, key: Key, now: Instant) -> Decision {
        let now = now
            .saturating_duration_since(self.epoch)
            .as_nanos()
            .saturating_mul(self.average);
        let Some(shard) = self.shard(&key) else {
            // No shards cannot happen (`max_keys >= 1`); admit rather
            // than refuse everyone.
            return self.decide(0, now).0;
        };
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tat) = map.get_mut(&key) {
            let (decision, next) = self.decide(*tat, now);
            if let Some(next) = next {
                *tat = next;
            }
            return decision;
        }
        let (decision, next) = self.decide(0, now);
        if let Some(next) = next {
            map.put(key, next);
            while map.len() > self.per_shard {
                map.pop_lru();
            }
        }
        decision
    }

    /// The GCRA step: the decision for a bucket whose TAT is `tat` at
    /// `now` (both in `1 / average` ns), and its new TAT if admitted.
    fn decide(&self, tat: u128, now: u128) -> (Decision, Option<u128>) {
        let base = tat.max(now);
        let next = base.saturating_add(self.interval);
        // `next > now`, since `interval >= 1`.
        let ahead = next.saturating_sub(now);
        let second = self.average.saturating_mul(NANOS_PER_SEC);
        let secs = |units: u128| u64::try_from(units.div_ceil(second)).unwrap_or(u64::MAX);
        if ahead > self.tolerance {
            let decision = Decision {
                admitted: false,
                limit: self.burst,
                remaining: 0,
                retry_after: secs(ahead - self.tolerance),
                reset: secs(base.saturating_sub(now)),
            };
            return (decision, None);
        }
        let left = (self.tolerance - ahead) / self.interval;
        let decision = Decision {
            admitted: true,
            limit: self.burst,
            remaining: u32::try_from(left).unwrap_or(u32::MAX),
            retry_after: 0,
            reset: secs(ahead),
        };
        (decision, Some(next))
    }

    fn shard(&self, key: &Key) -> Option<&Mutex<LruCache<Key, u128>>> {
        let n = u64::try_from(self.shards.len()).ok()?;
        let i = usize::try_from(self.hasher.hash_one(key) % n.max(1)).ok()?;
        self.shards.get(i)
    }

    /// How many buckets are kept.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limiter(average: u32, period: Duration, burst: u32, max_keys: usize) -> (Limiter, Instant) {
        let t0 = Instant::now();
        let config = RateLimitConfig {
            average,
            period,
            burst,
            key: RateKey::ClientIp,
            max_keys,
        };
        (Limiter::new(&config, t0), t0)
    }

    fn ip(n: u32) -> Key {
        Key {
            route: "r".into(),
            subject: Subject::Ip(IpAddr::from(n.to_be_bytes())),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_full_bucket_admits_the_burst_then_one_per_interval() {
        // 3 an hour: T = 20 min.
        let (l, t0) = limiter(3, HOUR, 3, 100);
        let at = |secs: f64| t0 + Duration::from_secs_f64(secs);
        for remaining in [2, 1, 0] {
            let d = l.check(ip(1), at(0.0));
            assert!(d.admitted);
            assert_eq!((d.limit, d.remaining, d.retry_after), (3, remaining, 0));
        }
        let d = l.check(ip(1), at(0.0));
        assert_eq!(
            d,
            Decision {
                admitted: false,
                limit: 3,
                remaining: 0,
                retry_after: 1200,
                reset: 3600
            }
        );
        // One nanosecond early is still too early; then exactly one.
        assert!(
            !l.check(ip(1), t0 + Duration::from_nanos(1_200_000_000_000 - 1))
                .admitted
        );
        let d = l.check(ip(1), at(1200.0));
        assert!(d.admitted);
        assert_eq!((d.remaining, d.reset), (0, 3600));
        let d = l.check(ip(1), at(1200.5));
        assert!(!d.admitted);
        // 1199.5 s to wait, rounded up; the bucket is full at 4800 s.
        assert_eq!((d.retry_after, d.reset), (1200, 3600));
        // Long idle: full again, but never more than the burst.
        let admitted = (0..10).filter(|_| l.check(ip(1), at(100_000.0)).admitted);
        assert_eq!(admitted.count(), 3);
    }

    #[test]
    fn exact_counts_in_a_window() {
        // 10 a second, burst 1: a request every 10 ms for 10 s gets
        // exactly one through every 100 ms.
        let (l, t0) = limiter(10, Duration::from_secs(1), 1, 100);
        let admitted = (0..1000u64)
            .filter(|k| l.check(ip(1), t0 + Duration::from_millis(k * 10)).admitted)
            .count();
        assert_eq!(admitted, 100);
        // 7 a second (T not a whole number of ns): over 7 s at 1 ms steps,
        // 7 (burst) + 48 refills (at 1/7 s .. 48/7 s) = 55, exactly.
        let (l, t0) = limiter(7, Duration::from_secs(1), 7, 100);
        let admitted = (0..7000u64)
            .filter(|k| l.check(ip(1), t0 + Duration::from_millis(*k)).admitted)
            .count();
        assert_eq!(admitted, 55);
    }

    #[test]
    fn burst_above_average_and_retry_after_rounds_up() {
        let (l, t0) = limiter(1, Duration::from_secs(1), 5, 100);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!((0..8).filter(|_| l.check(ip(1), at(0)).admitted).count(), 5);
        let d = l.check(ip(1), at(0));
        assert_eq!((d.limit, d.retry_after, d.reset), (5, 1, 5));
        assert_eq!(
            (0..3).filter(|_| l.check(ip(1), at(2000)).admitted).count(),
            2
        );

        // 2 per 3 s, burst 1: T = 1.5 s.
        let (l, t0) = limiter(2, Duration::from_secs(3), 1, 100);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(l.check(ip(1), at(0)).admitted);
        let d = l.check(ip(1), at(200));
        assert_eq!((d.admitted, d.retry_after, d.reset), (false, 2, 2));
        let d = l.check(ip(1), at(600));
        assert_eq!((d.admitted, d.retry_after, d.reset), (false, 1, 1));
        assert!(l.check(ip(1), at(1500)).admitted);
    }

    #[test]
    fn keys_and_routes_have_their_own_buckets() {
        let (l, t0) = limiter(1, HOUR, 1, 100);
        assert!(l.check(ip(1), t0).admitted);
        assert!(!l.check(ip(1), t0).admitted);
        assert!(l.check(ip(2), t0).admitted);
        let other_route = Key {
            route: "s".into(),
            subject: ip(1).subject,
        };
        assert!(l.check(other_route, t0).admitted);
        let header = |v: &[u8]| Key {
            route: "r".into(),
            subject: Subject::Header(l.digest(v)),
        };
        assert!(l.check(header(b"a"), t0).admitted);
        assert!(!l.check(header(b"a"), t0).admitted);
        assert!(l.check(header(b"b"), t0).admitted);
        assert_eq!(l.len(), 5);
    }

    #[test]
    fn a_flood_of_keys_is_bounded_and_evicts_the_least_recently_seen() {
        let (l, t0) = limiter(1, HOUR, 1, 64);
        for n in 0..10_000 {
            assert!(l.check(ip(n), t0).admitted, "fresh key {n}");
            assert!(l.len() <= 64);
        }
        assert!(!l.is_empty());
        // The last key is remembered (still limited); the first was
        // evicted and starts over with a full bucket.
        assert!(!l.check(ip(9_999), t0).admitted);
        assert!(l.check(ip(0), t0).admitted);

        // Fewer keys than shards: still exactly bounded.
        let (l, t0) = limiter(1, HOUR, 1, 3);
        for n in 0..100 {
            l.check(ip(n), t0);
        }
        assert!((1..=3).contains(&l.len()), "{}", l.len());
        let (l, t0) = limiter(1, HOUR, 1, 1);
        for n in 0..100 {
            assert!(l.check(ip(n), t0).admitted);
        }
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn extreme_settings_do_not_overflow() {
        let (l, t0) = limiter(u32::MAX, Duration::from_secs(u64::MAX / 4), u32::MAX, 10);
        let d = l.check(ip(1), t0 + Duration::from_secs(1 << 40));
        assert!(d.admitted);
        assert_eq!(d.remaining, u32::MAX - 1);
        let (l, t0) = limiter(1, Duration::from_secs(u64::MAX / 4), 1, 10);
        assert!(l.check(ip(1), t0).admitted);
        let d = l.check(ip(1), t0);
        assert!(!d.admitted);
        assert_eq!(d.retry_after, u64::MAX / 4);
        // Before the epoch (a request that arrived before a reload built
        // the instance) counts as at the epoch.
        let (l, t0) = limiter(1, HOUR, 1, 10);
        let early = t0.checked_sub(Duration::from_secs(5)).unwrap_or(t0);
        assert!(l.check(ip(1), early).admitted);
        assert!(!l.check(ip(1), t0).admitted);
    }
}
