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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use arc_swap::ArcSwap;

use super::endpoints::{Endpoint as DiscoveredEndpoint, EndpointSet, SourceStatus};
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
    /// TLS to the endpoints (`tls:`); `None` = cleartext.
    pub tls: Option<crate::tls::upstream::UpstreamTls>,
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

/// One failover tier: the endpoints of one priority and their selector.
#[derive(Debug)]
struct Tier {
    backends: Box<[Arc<Backend>]>,
    panic_view: Box<[PanicView]>,
    selector: Selector,
}

/// The current endpoints of a pool with the selectors built for them.
///
/// Immutable: a change of endpoints builds a new set (reusing `Arc<Backend>`s
/// by address) and swaps it in whole, so a request sees either the old or
/// the new list, never a mix. Endpoints are grouped in tiers by priority
/// (DNS SRV); almost every pool has exactly one.
#[derive(Debug)]
pub struct BackendSet {
    backends: Box<[Arc<Backend>]>,
    tiers: Box<[Tier]>,
}

impl BackendSet {
    /// Builds a set of one tier.
    pub fn new(backends: Vec<Arc<Backend>>, options: &SelectorOptions) -> Self {
        Self::with_priorities(backends.into_iter().map(|b| (b, 0)).collect(), options)
    }

    /// Builds a set whose endpoints carry priorities (lower is preferred).
    pub fn with_priorities(
        mut backends: Vec<(Arc<Backend>, u16)>,
        options: &SelectorOptions,
    ) -> Self {
        backends.sort_by_key(|(b, p)| (*p, b.addr()));
        let mut tiers = Vec::new();
        let mut rest = backends.as_slice();
        while let Some((_, p)) = rest.first() {
            let n = rest.iter().take_while(|(_, q)| q == p).count();
            let (tier, tail) = rest.split_at(n);
            rest = tail;
            let list: Box<[Arc<Backend>]> = tier.iter().map(|(b, _)| Arc::clone(b)).collect();
            tiers.push(Tier {
                panic_view: list.iter().map(|b| PanicView(Arc::clone(b))).collect(),
                selector: Selector::with_options(options.clone(), &list),
                backends: list,
            });
        }
        BackendSet {
            backends: backends.into_iter().map(|(b, _)| b).collect(),
            tiers: tiers.into_boxed_slice(),
        }
    }

    /// The backends, in tier then address order.
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
    static_endpoints: EndpointSet,
    discovery: Mutex<DiscoveryState>,
    families: Metrics,
    endpoint_histograms: bool,
    metrics: PoolMetrics,
    budget: Budget,
    panic: AtomicBool,
    panic_checked_ms: AtomicU64,
    base: Instant,
    gate: crate::limits::PoolGate,
    breaker: crate::limits::breaker::Breaker,
}

/// What the pool's discovery sources last reported.
#[derive(Debug, Default)]
struct DiscoveryState {
    sets: Vec<Option<EndpointSet>>,
    status: Vec<SourceStatus>,
}

impl DiscoveryState {
    /// The state a new pool starts from: every source pending, except
    /// that a source whose config is unchanged from `previous` keeps its
    /// last set and status.
    fn carried_over(config: &PoolConfig, previous: Option<(&PoolConfig, &Pool)>) -> Self {
        let mut state = DiscoveryState {
            sets: vec![None; config.discovery.len()],
            status: config
                .discovery
                .iter()
                .map(|d| SourceStatus {
                    name: d.name.clone(),
                    state: "pending",
                    ..SourceStatus::default()
                })
                .collect(),
        };
        let Some((old_cfg, old)) = previous else {
            return state;
        };
        let Ok(old_state) = old.discovery.lock() else {
            return state;
        };
        for (i, d) in config.discovery.iter().enumerate() {
            let Some(j) = old_cfg.discovery.iter().position(|o| o == d) else {
                continue;
            };
            if let (Some(slot), Some(set)) = (state.sets.get_mut(i), old_state.sets.get(j)) {
                slot.clone_from(set);
            }
            if let (Some(slot), Some(st)) = (state.status.get_mut(i), old_state.status.get(j)) {
                slot.clone_from(st);
            }
        }
        state
    }
}

/// How often the panic share is recomputed on the hot path.
const PANIC_RECHECK: Duration = Duration::from_millis(100);

impl Pool {
    /// Builds a pool from its validated config. `previous` is the pool's
    /// earlier incarnation, if a reload changed it: its backends are reused
    /// by address (with their load, health and connections) and its
    /// discovery sources' last sets are kept for every source whose config
    /// is unchanged, so the new pool serves the same endpoints at once.
    pub fn new(
        config: &PoolConfig,
        previous: Option<(&PoolConfig, &Pool)>,
        metrics: &Metrics,
    ) -> Self {
        let settings = PoolSettings {
            protocol: config.protocol,
            tls: config.tls.clone(),
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
        let mut static_endpoints = EndpointSet::new();
        for ep in &config.endpoints {
            static_endpoints.insert(ep.address, ep.weight, 0);
        }
        let state = DiscoveryState::carried_over(config, previous);
        let now = Instant::now();
        let selector_options = selector_options(&config.balance);
        let pool = Pool {
            name: config.name.as_str().into(),
            budget: Budget::new(
                config.retries.budget_ratio,
                config.retries.budget_min_per_second,
                now,
            ),
            settings,
            set: ArcSwap::from_pointee(BackendSet::new(Vec::new(), &selector_options)),
            selector_options,
            static_endpoints,
            discovery: Mutex::new(DiscoveryState::default()),
            families: metrics.clone(),
            endpoint_histograms: config.endpoint_histograms,
            metrics: metrics.pool(&config.name),
            panic: AtomicBool::new(false),
            panic_checked_ms: AtomicU64::new(0),
            base: now,
            gate: crate::limits::PoolGate::new(&config.limits),
            breaker: crate::limits::breaker::Breaker::new(&config.circuit_breaker),
        };
        let reuse: Vec<Arc<Backend>> = previous
            .map(|(_, old)| old.backends().backends().to_vec())
            .unwrap_or_default();
        pool.rebuild(&state.sets, &reuse);
        if let Ok(mut slot) = pool.discovery.lock() {
            *slot = state;
        }
        pool
    }

    /// Merges the static endpoints with every source's set and swaps in the
    /// result, reusing backends by address (see the module docs of
    /// `crate::discovery` for the precedence rule).
    fn rebuild(&self, sets: &[Option<EndpointSet>], reuse: &[Arc<Backend>]) {
        let mut merged: BTreeMap<SocketAddr, DiscoveredEndpoint> = self.static_endpoints.0.clone();
        for set in sets.iter().flatten() {
            for (addr, ep) in &set.0 {
                merged.entry(*addr).or_insert(*ep);
            }
        }
        let current = self.set.load();
        let find = |addr: SocketAddr, weight: u32| {
            current
                .backends()
                .iter()
                .chain(reuse.iter())
                .find(|b| {
                    b.addr() == addr
                        && b.weight() == weight
                        && b.conns().protocol() == self.settings.protocol
                        && b.conns().tls() == self.settings.tls.as_ref()
                })
                .cloned()
        };
        let backends: Vec<(Arc<Backend>, u16)> = merged
            .into_iter()
            .map(|(addr, ep)| {
                let b = find(addr, ep.weight).unwrap_or_else(|| {
                    Arc::new(Backend::new(
                        addr,
                        ep.weight,
                        self.settings.protocol,
                        self.settings.tls.clone(),
                        self.families.endpoint(
                            &self.name,
                            &addr.to_string(),
                            self.endpoint_histograms,
                        ),
                    ))
                });
                (b, ep.priority)
            })
            .collect();
        self.set.store(Arc::new(BackendSet::with_priorities(
            backends,
            &self.selector_options,
        )));
    }

    /// Replaces the contribution of discovery source `index` (`None` drops
    /// it) and rebuilds the backend set. Control plane, called by the
    /// source's driver.
    pub fn update_source(&self, index: usize, set: Option<&EndpointSet>) {
        let Ok(mut state) = self.discovery.lock() else {
            return;
        };
        if let Some(slot) = state.sets.get_mut(index) {
            *slot = set.cloned();
        }
        self.rebuild(&state.sets, &[]);
    }

    /// Updates the status of discovery source `index`.
    pub fn source_status(&self, index: usize, f: impl FnOnce(&mut SourceStatus)) {
        if let Ok(mut state) = self.discovery.lock() {
            if let Some(st) = state.status.get_mut(index) {
                f(st);
            }
        }
    }

    /// The set discovery source `index` contributes now, if any (after a
    /// reload, the one carried over from the pool's earlier incarnation).
    pub fn source_set(&self, index: usize) -> Option<EndpointSet> {
        self.discovery
            .lock()
            .ok()
            .and_then(|s| s.sets.get(index).cloned().flatten())
    }

    /// Status of every discovery source, for `/status`.
    pub fn sources(&self) -> Vec<SourceStatus> {
        self.discovery
            .lock()
            .map(|s| s.status.clone())
            .unwrap_or_default()
    }

    /// Names of the sources that currently contribute `addr` (`static`
    /// first), for `/status`.
    pub fn provenance(&self, addr: SocketAddr) -> Vec<String> {
        let mut out = Vec::new();
        if self.static_endpoints.0.contains_key(&addr) {
            out.push("static".to_owned());
        }
        if let Ok(state) = self.discovery.lock() {
            for (set, st) in state.sets.iter().zip(&state.status) {
                if set.as_ref().is_some_and(|s| s.0.contains_key(&addr)) {
                    out.push(st.name.clone());
                }
            }
        }
        out
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

    /// The pool's request slots (`limits:`).
    pub fn gate(&self) -> &crate::limits::PoolGate {
        &self.gate
    }

    /// The pool's circuit breaker.
    pub fn breaker(&self) -> &crate::limits::breaker::Breaker {
        &self.breaker
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
            // Counted in `weir_upstream_picks_total` by the proxy when the
            // request is sent, so a pick a retry cannot use (no budget
            // left) is not counted.
            Some(backend) => Ok(Lease::new(Arc::clone(backend))),
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
        // Tiers in priority order: the first with an available endpoint
        // takes the request. In panic mode every endpoint counts as
        // available, so the first tier always answers.
        set.tiers
            .iter()
            .find_map(|tier| Self::select_in(tier, now, panic, tried))
    }

    fn select_in<'s>(
        tier: &'s Tier,
        now: Instant,
        panic: bool,
        tried: &[SocketAddr],
    ) -> Option<&'s Arc<Backend>> {
        let pick = || -> Option<&'s Arc<Backend>> {
            let i = if panic {
                tier.selector.pick(&tier.panic_view, now)
            } else {
                tier.selector.pick(&tier.backends, now)
            };
            i.and_then(|i| tier.backends.get(i))
        };
        if tried.is_empty() {
            return pick();
        }
        // A retry: the selector's choice if it is new, else a few more
        // draws, else any available backend not yet tried.
        for _ in 0..4 {
            match pick() {
                Some(b) if !tried.contains(&b.addr()) => return Some(b),
                Some(_) => {}
                None => return None,
            }
        }
        tier.backends
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

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::health::Health;
    use std::collections::BTreeSet;

    const ALGORITHMS: [&str; 3] = ["round_robin", "least_connections", "power_of_two_choices"];

    /// A pool `p` over `n` endpoints (127.0.0.1:1001, :1002, …), with
    /// `extra` added to its keys.
    fn pool(n: u16, extra: &str) -> Pool {
        let eps: String = (1..=n)
            .map(|i| format!("      - address: \"127.0.0.1:{}\"\n", 1000 + i))
            .collect();
        let yaml = format!(
            "listeners:\n  - name: main\n    bind: \"127.0.0.1:1\"\n\
             routes:\n  - pool: p\n\
             pools:\n  - name: p\n{extra}    endpoints:\n{eps}"
        );
        let config = crate::Config::from_yaml(&yaml, "test.yaml").unwrap();
        Pool::new(&config.pools[0], None, &Metrics::new().unwrap())
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1000 + i))
    }

    fn set_down(pool: &Pool, i: u16) {
        let set = pool.backends();
        let b = set.backends().iter().find(|b| b.addr() == addr(i)).unwrap();
        b.health().set_active(Health::Unhealthy);
    }

    /// The endpoints 100 picks excluding `tried` went to; `None` for a
    /// failed pick.
    fn picks(pool: &Pool, tried: &[SocketAddr]) -> Vec<Option<SocketAddr>> {
        let now = Instant::now();
        (0..100)
            .map(|_| {
                let lease = pool.pick_excluding(now, tried).ok();
                lease.map(|l| l.backend().addr())
            })
            .collect()
    }

    #[test]
    fn excluding_the_only_endpoint_fails_and_counts_no_endpoint() {
        for algorithm in ALGORITHMS {
            let p = pool(1, &format!("    balance: {algorithm}\n"));
            assert!(p.pick(Instant::now()).is_ok(), "{algorithm}");
            let before = p.metrics().no_endpoint.get();
            let err = p.pick_excluding(Instant::now(), &[addr(1)]).unwrap_err();
            assert!(matches!(err, ProxyError::NoEndpoint { .. }), "{algorithm}");
            assert_eq!(p.metrics().no_endpoint.get(), before + 1, "{algorithm}");
        }
    }

    #[test]
    fn excluding_all_but_one_always_picks_that_one() {
        for algorithm in ALGORITHMS {
            let p = pool(4, &format!("    balance: {algorithm}\n"));
            let got = picks(&p, &[addr(1), addr(2), addr(4)]);
            assert!(
                got.iter().all(|a| *a == Some(addr(3))),
                "{algorithm}: {got:?}"
            );
            let none = picks(&p, &[addr(1), addr(2), addr(3), addr(4)]);
            assert!(none.iter().all(Option::is_none), "{algorithm}");
        }
    }

    #[test]
    fn excluding_some_spreads_over_the_rest() {
        let p = pool(3, "");
        let got = picks(&p, &[addr(2)]);
        assert!(got.iter().all(|a| matches!(*a, Some(a) if a != addr(2))));
        for i in [1, 3] {
            assert!(got.contains(&Some(addr(i))), "{i} never picked");
        }
    }

    #[test]
    fn unavailable_endpoints_are_never_picked_even_when_the_rest_are_tried() {
        for algorithm in ALGORITHMS {
            let p = pool(3, &format!("    balance: {algorithm}\n"));
            set_down(&p, 2);
            let got = picks(&p, &[addr(1)]);
            assert!(
                got.iter().all(|a| *a == Some(addr(3))),
                "{algorithm}: {got:?}"
            );
            set_down(&p, 3);
            // Only the tried endpoint is available.
            assert!(
                picks(&p, &[addr(1)]).iter().all(Option::is_none),
                "{algorithm}"
            );
            assert!(p.pick(Instant::now()).is_ok());
        }
    }

    #[test]
    fn in_panic_mode_unavailable_endpoints_count_but_tried_ones_never_do() {
        // Three of four down is 25% available, under the 50% threshold.
        let p = pool(4, "    health:\n      panic_threshold: 50\n");
        for i in [2, 3, 4] {
            set_down(&p, i);
        }
        let got = picks(&p, &[addr(1)]);
        assert!(p.in_panic());
        assert!(got.iter().all(|a| a.is_some() && *a != Some(addr(1))));
        for i in [2, 3, 4] {
            assert!(got.contains(&Some(addr(i))), "{i} never picked");
        }
        let got = picks(&p, &[addr(1), addr(2), addr(3)]);
        assert!(got.iter().all(|a| *a == Some(addr(4))), "{got:?}");
        let all: Vec<SocketAddr> = (1..=4).map(addr).collect();
        assert!(picks(&p, &all).iter().all(Option::is_none));
    }

    #[test]
    fn without_panic_mode_the_same_pool_has_no_endpoint_to_retry_on() {
        let p = pool(4, "");
        for i in [2, 3, 4] {
            set_down(&p, i);
        }
        assert!(picks(&p, &[addr(1)]).iter().all(Option::is_none));
        assert!(!p.in_panic());
    }

    /// A pool `p` with static endpoint 1 (tier 0) and one DNS source whose
    /// set the test writes: endpoints 2 and 3 at priority 1, 4 at 2.
    fn tiered() -> Pool {
        let p = pool(
            1,
            "    discovery:\n      - dns: {name: db.test, type: SRV}\n",
        );
        let mut set = EndpointSet::new();
        set.insert(addr(2), 1, 1);
        set.insert(addr(3), 1, 1);
        set.insert(addr(4), 1, 2);
        p.update_source(0, Some(&set));
        p
    }

    fn distinct(picks: &[Option<SocketAddr>]) -> BTreeSet<Option<SocketAddr>> {
        picks.iter().copied().collect()
    }

    #[test]
    fn the_lowest_tier_with_an_available_endpoint_takes_every_request() {
        let p = tiered();
        assert_eq!(p.backends().backends().len(), 4);
        assert_eq!(distinct(&picks(&p, &[])), BTreeSet::from([Some(addr(1))]));
        set_down(&p, 1);
        let second = BTreeSet::from([Some(addr(2)), Some(addr(3))]);
        assert_eq!(distinct(&picks(&p, &[])), second, "tier 1 shares the load");
        set_down(&p, 2);
        set_down(&p, 3);
        assert_eq!(distinct(&picks(&p, &[])), BTreeSet::from([Some(addr(4))]));
        set_down(&p, 4);
        assert_eq!(distinct(&picks(&p, &[])), BTreeSet::from([None]));
        // The first tier comes back and takes over again.
        let set = p.backends();
        let first = set.backends().iter().find(|b| b.addr() == addr(1)).unwrap();
        first.health().set_active(Health::Healthy);
        assert_eq!(distinct(&picks(&p, &[])), BTreeSet::from([Some(addr(1))]));
    }

    #[test]
    fn a_retry_falls_through_to_the_next_tier() {
        let p = tiered();
        let got = distinct(&picks(&p, &[addr(1)]));
        assert_eq!(got, BTreeSet::from([Some(addr(2)), Some(addr(3))]));
        let got = distinct(&picks(&p, &[addr(1), addr(2), addr(3)]));
        assert_eq!(got, BTreeSet::from([Some(addr(4))]));
    }

    #[test]
    fn panic_mode_enters_below_the_threshold_and_leaves_at_the_next_recheck() {
        let p = pool(4, "    health:\n      panic_threshold: 50\n");
        let t0 = Instant::now();
        p.pick(t0).unwrap();
        assert!(!p.in_panic());
        // 1 of 4 available is below 50 %: every endpoint takes traffic.
        for i in [1, 2, 3] {
            set_down(&p, i);
        }
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let spread: BTreeSet<_> = (0..200)
            .map(|_| p.pick(at(200)).unwrap().backend().addr())
            .collect();
        assert!(p.in_panic());
        assert_eq!(spread.len(), 4, "balanced over all endpoints: {spread:?}");
        // Recovered endpoints: the flag is recomputed at most every
        // PANIC_RECHECK, so a burst of picks costs one scan.
        let set = p.backends();
        for b in set.backends() {
            b.health().set_active(Health::Healthy);
        }
        p.pick(at(250)).unwrap();
        assert!(p.in_panic(), "not rechecked within {PANIC_RECHECK:?}");
        p.pick(at(300)).unwrap();
        assert!(!p.in_panic(), "rechecked after {PANIC_RECHECK:?}");
    }

    #[test]
    fn with_nothing_available_panic_is_checked_at_once_not_at_the_next_recheck() {
        let p = pool(2, "    health:\n      panic_threshold: 50\n");
        let t0 = Instant::now();
        p.pick(t0).unwrap();
        set_down(&p, 1);
        set_down(&p, 2);
        // Within the recheck interval, yet the pick succeeds in panic.
        let lease = p.pick(t0 + Duration::from_millis(1));
        assert!(lease.is_ok());
        assert!(p.in_panic());
    }
}
