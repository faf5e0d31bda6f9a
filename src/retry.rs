//! Retries: when a failed request may be tried again, how many retries a
//! pool can afford, and how long to wait in between.
//!
//! The rules (`proxy.rs` applies them, this module decides):
//!
//! - A request that was **never sent** (connect refused or timed out, a
//!   pooled connection found closed before the request was written) may be
//!   retried whatever its method: the endpoint cannot have acted on it.
//! - An **idempotent** request (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE,
//!   PUT, DELETE) with a **replayable** body (none, or one of known length
//!   up to `max_replay_body`, buffered before sending) may be retried after
//!   the connection was reset or closed before the response headers, or
//!   when the response status is in `on_statuses`.
//! - Never after the response started going to the client: every retry
//!   decision is made before response headers are forwarded.
//! - Always on a **different** endpoint; if there is none, the error stands.
//! - Bounded by `attempts` and by a per-pool [`Budget`], so that when every
//!   endpoint fails, retries add at most `budget_ratio` of the traffic plus
//!   `budget_min_per_second`, instead of multiplying it (the retry budget of
//!   Finagle and linkerd).
//! - Between attempts, a full-jitter exponential backoff; a `503` with
//!   `Retry-After` no longer than `backoff_max` waits that long instead,
//!   and a longer `Retry-After` is not retried.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use http::{HeaderMap, Method};

/// One token is 1000 milli-tokens; fixed point keeps the budget lock-free.
const TOKEN: i64 = 1000;

/// A lock-free retry budget: each request deposits `ratio` tokens, a retry
/// withdraws one, and `min_per_second` tokens are added per second so a
/// quiet pool can still retry. The reserve is capped at ten seconds' worth
/// of the floor (at least 100 tokens), so a long healthy period cannot fund
/// a long storm of retries later.
#[derive(Debug)]
pub struct Budget {
    tokens: AtomicI64,
    last_refill_ms: AtomicU64,
    deposit: i64,
    floor_per_sec: i64,
    cap: i64,
    base: Instant,
}

impl Budget {
    /// A budget starting with one second's floor.
    pub fn new(ratio: f64, min_per_second: u32, now: Instant) -> Self {
        let floor = i64::from(min_per_second);
        Budget {
            tokens: AtomicI64::new(floor * TOKEN),
            last_refill_ms: AtomicU64::new(0),
            deposit: (ratio * TOKEN as f64).round() as i64,
            floor_per_sec: floor,
            cap: (floor * 10).max(100) * TOKEN,
            base: now,
        }
    }

    /// Records one original (non-retry) request.
    pub fn deposit(&self) {
        self.add(self.deposit);
    }

    fn add(&self, milli: i64) {
        if milli <= 0 {
            return;
        }
        let cap = self.cap;
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(milli).min(cap))
            });
    }

    /// Takes one retry's worth of tokens if there is one.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        let last = self.last_refill_ms.load(Ordering::Relaxed);
        if now_ms > last
            && self
                .last_refill_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // floor tokens/s × elapsed ms = milli-tokens.
            self.add(self.floor_per_sec.saturating_mul((now_ms - last) as i64));
        }
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= TOKEN).then_some(t - TOKEN)
            })
            .is_ok()
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Full-jitter backoff before attempt `retry` (1 for the first retry):
/// uniform in `[0, min(max, base × 2^(retry-1))]` (the AWS architecture
/// blog's "full jitter", which spreads synchronized clients best).
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let ceiling = exp.min(max);
    ceiling.mul_f64(fastrand::f64())
}

/// The delay a `Retry-After` header asks for, if it is in delta-seconds
/// form. (An HTTP-date is not honoured: it needs a trusted clock, and a
/// proxy should not hold a request that long anyway.)
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn budget_bounds_retries_by_ratio_plus_floor() {
        let t0 = Instant::now();
        let b = Budget::new(0.2, 0, t0);
        // No floor, no deposits: nothing to spend.
        assert!(!b.try_withdraw(t0));
        // 100 requests at 20% → 20 retries, not 21.
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn budget_floor_refills_per_second() {
        let t0 = Instant::now();
        let b = Budget::new(0.0, 5, t0);
        let first = (0..50).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(first, 5, "starts with one second of floor");
        let later = t0 + Duration::from_secs(2);
        let second = (0..50).filter(|_| b.try_withdraw(later)).count();
        assert_eq!(second, 10, "two more seconds of floor");
    }

    #[test]
    fn budget_reserve_is_capped() {
        let t0 = Instant::now();
        let b = Budget::new(1.0, 1, t0);
        for _ in 0..100_000 {
            b.deposit();
        }
        let granted = (0..100_000).filter(|_| b.try_withdraw(t0)).count();
        assert_eq!(granted, 100);
    }

    #[test]
    fn backoff_is_within_bounds() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(250);
        for retry in 1..10 {
            let d = backoff(retry, base, max);
            let ceiling = (base * (1 << (retry - 1))).min(max);
            assert!(d <= ceiling, "{retry}: {d:?} > {ceiling:?}");
        }
    }

    #[test]
    fn retry_after_delta_seconds_only() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }
}
