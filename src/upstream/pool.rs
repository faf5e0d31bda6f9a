//! A named pool of backends: its selector, health policy, retry budget and
//! panic mode.
//!
//! **Panic mode** (Envoy's): with `health.panic_threshold: N`, when fewer
//! than N % of a pool's endpoints are available, the pool balances over
//! *all* its endpoints, healthy or not, on the theory that a health signal
//! that has taken out most of a pool is more likely wrong (or the load on
//! the few survivors would take them down too) than that most endpoints
//! are truly dead. The share is recomputed at most every 100 ms and
//! whenever a pick finds nothing available, so the hot path pays one
//! atomic load. Entering and leaving panic is logged and shown by the
//! `weir_pool_panic` gauge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Backend, ConnectSettings, Lease};
use crate::balance::{Endpoint, EndpointLoad, Selector, SelectorOptions};
use crate::config::{
    BalanceConfig, HostHeader, LoadMetric, PoolConfig, RetryConfig, UpstreamProtocol,
};
use crate::error::ProxyError;
use crate::health::PassivePolicy;
use crate::metrics::{Metrics, PoolMetrics};
use crate::retry::Budget;

/// Per-pool settings the request path reads.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Protocol to the endpoints.
    pub protocol: UpstreamProtocol,
    /// `Host` handling.
    pub host_header: HostHeader,
    /// Connect/response timeouts and idle-pool limits.
    pub connect: ConnectSettings,
    /// Outlier ejection (`health.passive`); `None` = off.
    pub passive: Option<PassivePolicy>,
    /// Retry policy.
    pub retries: RetryConfig,
    /// Panic threshold in percent; 0 = off.
    pub panic_threshold: u8,
}

/// A backend seen as always available: the view selectors get in panic
/// mode.
#[derive(Debug)]
struct PanicView(Arc<Backend>);

impl Endpoint for PanicView {
    fn weight(&self) -> u32 {
        self.0.weight()
    }
    fn load(&self) -> &EndpointLoad {
        self.0.load()
    }
    fn is_available(&self, _now: Instant) -> bool {
        true
    }
}

/// The current endpoints of a pool with the selector built for them.
///
/// Immutable: a change of endpoints builds a new set (reusing `Arc<Backend>`s
/// by address) and swaps it in whole, so a request sees either the old or
/// the new list, never a mix.
#[derive(Debug)]
pub struct BackendSet {
    backends: Box<[Arc<Backend>]>,
    panic_view: Box<[PanicView]>,
    selector: Selector,
}

impl BackendSet {
    /// Builds a set and its selector.
    pub fn new(backends: Vec<Arc<Backend>>, options: &SelectorOptions) -> Self {
        let panic_view = backends.iter().map(|b| PanicView(Arc::clone(b))).collect();
        let backends = backends.into_boxed_slice();
        let selector = Selector::with_options(options.clone(), &backends);
        BackendSet {
            backends,
            panic_view,
            selector,
        }
    }

    /// The backends, in a stable order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    fn available(&self, now: Instant) -> usize {
        self.backends.iter().filter(|b| b.is_available(now)).count()
    }
}

/// One named pool.
#[derive(Debug)]
pub struct Pool {
    name: Arc<str>,
    settings: PoolSettings,
    selector_options: SelectorOptions,
    set: ArcSwap<BackendSet>,
    metrics: PoolMetrics,
    budget: Budget,
    panic: AtomicBool,
    panic_checked_ms: AtomicU64,
    base: Instant,
}

/// How often the panic share is recomputed on the hot path.
const PANIC_RECHECK: Duration = Duration::from_millis(100);

impl Pool {
    /// Builds a pool from its validated config. `reuse` offers backends of a
    /// previous incarnation of the pool; one with the same address, weight
    /// and protocol is kept, with its load, health and connections.
    pub fn new(
        config: &PoolConfig,
        reuse: &HashMap<SocketAddr, Arc<Backend>>,
        metrics: &Metrics,
    ) -> Self {
        let settings = PoolSettings {
            protocol: config.protocol,
            host_header: config.host_header,
            connect: ConnectSettings {
                connect_timeout: config.timeouts.connect,
                response_header_timeout: config.timeouts.response_header,
                idle_timeout: config.timeouts.idle,
                max_idle: config.max_idle_per_endpoint,
            },
            passive: config.health.passive.clone(),
            retries: config.retries.clone(),
            panic_threshold: config.health.panic_threshold,
        };
        let selector_options = selector_options(&config.balance);
        let backends = config
            .endpoints
            .iter()
            .map(|ep| match reuse.get(&ep.address) {
                Some(b) if b.weight() == ep.weight && b.conns().protocol() == config.protocol => {
                    Arc::clone(b)
                }
                _ => Arc::new(Backend::new(
                    ep.address,
                    ep.weight,
                    config.protocol,
                    metrics.endpoint(
                        &config.name,
                        &ep.address.to_string(),
                        config.endpoint_histograms,
                    ),
                )),
            })
            .collect();
        let set = BackendSet::new(backends, &selector_options);
        let now = Instant::now();
        Pool {
            name: config.name.as_str().into(),
            budget: Budget::new(
                config.retries.budget_ratio,
                config.retries.budget_min_per_second,
                now,
            ),
            settings,
            selector_options,
            set: ArcSwap::from_pointee(set),
            metrics: metrics.pool(&config.name),
            panic: AtomicBool::new(false),
            panic_checked_ms: AtomicU64::new(0),
            base: now,
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Settings for forwarding.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// This pool's metric handles.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// The pool's retry budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Whether the pool is in panic mode (as of the last check).
    pub fn in_panic(&self) -> bool {
        self.panic.load(Ordering::Relaxed)
    }

    /// Picks an available backend and leases it.
    ///
    /// Hot path: one `ArcSwap` load, one selector call, one atomic
    /// increment (plus one atomic load when a panic threshold is set).
    pub fn pick(&self, now: Instant) -> Result<Lease, ProxyError> {
        self.pick_excluding(now, &[])
    }

    /// Like [`Pool::pick`], but never returns a backend in `tried` (a
    /// retry goes to a different endpoint). Fails when only tried backends
    /// are available.
    pub fn pick_excluding(&self, now: Instant, tried: &[SocketAddr]) -> Result<Lease, ProxyError> {
        let set = self.set.load();
        let panic = self.settings.panic_threshold > 0 && self.check_panic(&set, now, false);
        let mut found = self.select(&set, now, panic, tried);
        if found.is_none() && self.settings.panic_threshold > 0 && !panic {
            // Nothing available: the share may have just crossed the
            // threshold; look now rather than at the next recheck.
            if self.check_panic(&set, now, true) {
                found = self.select(&set, now, true, tried);
            }
        }
        match found {
            Some(backend) => {
                backend.metrics().picks.inc();
                Ok(Lease::new(Arc::clone(backend)))
            }
            None => {
                self.metrics.no_endpoint.inc();
                Err(ProxyError::NoEndpoint {
                    pool: Arc::clone(&self.name),
                })
            }
        }
    }

    fn select<'s>(
        &self,
        set: &'s BackendSet,
        now: Instant,
        panic: bool,
        tried: &[SocketAddr],
    ) -> Option<&'s Arc<Backend>> {
        let pick = |set: &'s BackendSet| -> Option<&'s Arc<Backend>> {
            let i = if panic {
                set.selector.pick(&set.panic_view, now)
            } else {
                set.selector.pick(&set.backends, now)
            };
            i.and_then(|i| set.backends.get(i))
        };
        if tried.is_empty() {
            return pick(set);
        }
        // A retry: the selector's choice if it is new, else a few more
        // draws, else any available backend not yet tried.
        for _ in 0..4 {
            match pick(set) {
                Some(b) if !tried.contains(&b.addr()) => return Some(b),
                Some(_) => {}
                None => return None,
            }
        }
        set.backends
            .iter()
            .find(|b| !tried.contains(&b.addr()) && (panic || b.is_available(now)))
    }

    /// Recomputes the panic flag if it is stale (or `force`), returning it.
    fn check_panic(&self, set: &BackendSet, now: Instant, force: bool) -> bool {
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        let last = self.panic_checked_ms.load(Ordering::Relaxed);
        let stale = now_ms.saturating_sub(last) >= PANIC_RECHECK.as_millis() as u64 || last == 0;
        if !(force || stale)
            || self
                .panic_checked_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return self.panic.load(Ordering::Relaxed);
        }
        let total = set.backends.len();
        let available = set.available(now);
        let panic = crate::health::in_panic(available, total, self.settings.panic_threshold);
        let was = self.panic.swap(panic, Ordering::Relaxed);
        if panic != was {
            if panic {
                tracing::warn!(pool = %self.name, available, total, threshold = self.settings.panic_threshold,
                    "pool entered panic mode: balancing over all endpoints");
            } else {
                tracing::info!(pool = %self.name, available, total, "pool left panic mode");
            }
        }
        panic
    }

    /// `(ejected, total)` endpoints at `now`: the input of passive
    /// ejection's `max_ejection_percent` bound. O(n), called only when an
    /// endpoint is about to be ejected.
    pub fn ejection_counts(&self, now: Instant) -> (usize, usize) {
        let set = self.set.load();
        let ejected = set
            .backends
            .iter()
            .filter(|b| b.health().is_ejected(now))
            .count();
        (ejected, set.backends.len())
    }

    /// A snapshot of the current set, for the control plane; may be held
    /// across `.await`.
    pub fn backends(&self) -> Arc<BackendSet> {
        self.set.load_full()
    }

    /// Replaces the backend list (control plane, single writer).
    pub fn replace_backends(&self, backends: Vec<Arc<Backend>>) {
        self.set
            .store(Arc::new(BackendSet::new(backends, &self.selector_options)));
    }

    /// Closes pooled upstream connections idle for longer than the pool's
    /// idle timeout. Called periodically by the control plane.
    pub fn sweep_idle(&self) {
        let set = self.set.load();
        for backend in set.backends() {
            backend.conns().sweep(&self.settings.connect);
        }
    }
}

/// Maps the `balance:` config onto the pure selector's options.
fn selector_options(config: &BalanceConfig) -> SelectorOptions {
    SelectorOptions {
        algorithm: config.algorithm,
        load: match config.load {
            LoadMetric::InFlight => crate::balance::LoadMetric::InFlight,
            LoadMetric::PeakEwma => crate::balance::LoadMetric::PeakEwma,
        },
        default_rtt: config.peak_ewma.default_rtt,
        decay: config.peak_ewma.decay,
    }
}
