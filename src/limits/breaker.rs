//! A pool's circuit breaker: Envoy's fail-fast thresholds
//! (`pools[].circuit_breaker`).
//!
//! Four counters, each with an optional threshold:
//!
//! - `max_requests`: requests in flight to the pool (from admission to
//!   the end of the response body);
//! - `max_pending_requests`: requests waiting in the pool's `limits`
//!   queue for a slot;
//! - `max_retries`: retries in flight (from the retry's decision to its
//!   answer);
//! - `max_connections`: upstream connections open to the pool's endpoints
//!   (in use and idle), checked when a request would have to open one.
//!
//! A request that would pass a threshold is not queued: it gets a 503 with
//! `x-weir-overloaded: true` at once (a retry that would pass
//! `max_retries` is not made, and the attempt's own outcome stands).
//!
//! **Beside `limits`.** `pools[].limits` *queues*: a request waits up to
//! `queue_timeout` for a slot, which smooths bursts. The breaker *sheds*:
//! it is checked first, and refuses without waiting. Both can be set: e.g.
//! `limits.max_requests: 100` with `circuit_breaker.max_pending_requests:
//! 50` lets 100 run, 50 wait, and refuses the 151st at once, as Envoy's
//! `max_requests` + `max_pending_requests` do for a connection pool.
//!
//! The counters are plain atomics; a [`Slot`] holds one unit and gives it
//! back when dropped, so a request's units are released with it whatever
//! path it ends on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::CircuitBreakerConfig;

/// Which threshold refused a request (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threshold {
    /// `max_connections`.
    Connections,
    /// `max_pending_requests`.
    Pending,
    /// `max_requests`.
    Requests,
    /// `max_retries`.
    Retries,
}

impl Threshold {
    /// All thresholds, in label order.
    pub const ALL: [Threshold; 4] = [
        Threshold::Connections,
        Threshold::Pending,
        Threshold::Requests,
        Threshold::Retries,
    ];

    /// The label value (the config key).
    pub fn as_str(self) -> &'static str {
        match self {
            Threshold::Connections => "max_connections",
            Threshold::Pending => "max_pending_requests",
            Threshold::Requests => "max_requests",
            Threshold::Retries => "max_retries",
        }
    }
}

/// The counters of one pool.
#[derive(Debug, Default)]
pub struct Breaker {
    config: CircuitBreakerConfig,
    requests: Arc<AtomicUsize>,
    pending: Arc<AtomicUsize>,
    retries: Arc<AtomicUsize>,
}

/// One unit of a counter, given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breaker {
    /// A breaker with `config`'s thresholds.
    pub fn new(config: &CircuitBreakerConfig) -> Self {
        Breaker {
            config: *config,
            ..Breaker::default()
        }
    }

    /// Whether no threshold is set (the request path then skips it).
    pub fn is_off(&self) -> bool {
        self.config == CircuitBreakerConfig::default()
    }

    /// The thresholds.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// Takes a unit of `counter` unless that would pass `max`.
    fn take(counter: &Arc<AtomicUsize>, max: Option<usize>) -> Option<Slot> {
        let max = max.unwrap_or(usize::MAX);
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(Arc::clone(counter)))
    }

    /// A request in flight, or `Err` at `max_requests`.
    pub fn request(&self) -> Result<Slot, Threshold> {
        Self::take(&self.requests, self.config.max_requests).ok_or(Threshold::Requests)
    }

    /// A request waiting for a `limits` slot, or `Err` at
    /// `max_pending_requests`.
    pub fn pending(&self) -> Result<Slot, Threshold> {
        Self::take(&self.pending, self.config.max_pending_requests).ok_or(Threshold::Pending)
    }

    /// A retry in flight, or `Err` at `max_retries`.
    pub fn retry(&self) -> Result<Slot, Threshold> {
        Self::take(&self.retries, self.config.max_retries).ok_or(Threshold::Retries)
    }

    /// Whether a request that must open a connection may, with `open`
    /// connections open to the pool now.
    pub fn may_connect(&self, open: usize) -> Result<(), Threshold> {
        match self.config.max_connections {
            Some(max) if open >= max => Err(Threshold::Connections),
            _ => Ok(()),
        }
    }

    /// The counters now: requests, pending, retries (for `/status`).
    pub fn counts(&self) -> (usize, usize, usize) {
        let get = |c: &AtomicUsize| c.load(Ordering::Acquire);
        (get(&self.requests), get(&self.pending), get(&self.retries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_refused_at_the_threshold_and_given_back_on_drop() {
        let b = Breaker::new(&CircuitBreakerConfig {
            max_requests: Some(2),
            max_retries: Some(1),
            ..Default::default()
        });
        let a = b.request().unwrap();
        let c = b.request().unwrap();
        assert_eq!(b.request().unwrap_err(), Threshold::Requests);
        drop(a);
        let d = b.request().unwrap();
        assert_eq!(b.counts().0, 2);
        drop((c, d));
        assert_eq!(b.counts().0, 0);
        let r = b.retry().unwrap();
        assert_eq!(b.retry().unwrap_err(), Threshold::Retries);
        drop(r);
        assert!(b.retry().is_ok());
        // No threshold: unlimited.
        let _p: Vec<Slot> = (0..1000).map(|_| b.pending().unwrap()).collect();
        assert_eq!(b.counts().1, 1000);
    }

    #[test]
    fn connections_are_checked_against_the_open_count() {
        let b = Breaker::new(&CircuitBreakerConfig {
            max_connections: Some(3),
            ..Default::default()
        });
        assert!(b.may_connect(2).is_ok());
        assert_eq!(b.may_connect(3), Err(Threshold::Connections));
        assert!(Breaker::new(&CircuitBreakerConfig::default()).is_off());
        assert!(!b.is_off());
    }
}
