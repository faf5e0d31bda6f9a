//! A named pool of backends and its selector.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use super::{Backend, ConnectSettings, Lease};
use crate::balance::{Selector, SelectorOptions};
use crate::config::{BalanceConfig, HostHeader, LoadMetric, PoolConfig, UpstreamProtocol};
use crate::error::ProxyError;
use crate::metrics::{Metrics, PoolMetrics};

/// Per-pool settings the request path reads.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// Protocol to the endpoints.
    pub protocol: UpstreamProtocol,
    /// `Host` handling.
    pub host_header: HostHeader,
    /// Connect/response timeouts and idle-pool limits.
    pub connect: ConnectSettings,
}

/// The current endpoints of a pool with the selector built for them.
///
/// Immutable: a change of endpoints builds a new set (reusing `Arc<Backend>`s
/// by address) and swaps it in whole, so a request sees either the old or
/// the new list, never a mix.
#[derive(Debug)]
pub struct BackendSet {
    backends: Box<[Arc<Backend>]>,
    selector: Selector,
}

impl BackendSet {
    /// Builds a set and its selector.
    pub fn new(backends: Vec<Arc<Backend>>, options: &SelectorOptions) -> Self {
        let backends = backends.into_boxed_slice();
        let selector = Selector::with_options(options.clone(), &backends);
        BackendSet { backends, selector }
    }

    /// The backends, in a stable order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
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
}

impl Pool {
    /// Builds a pool from its validated config. `reuse` offers backends of a
    /// previous incarnation of the pool; one with the same address, weight
    /// and protocol is kept, with its load and connections.
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
        };
        let selector_options = selector_options(&config.balance);
        let backends = config
            .endpoints
            .iter()
            .map(|ep| match reuse.get(&ep.address) {
                Some(b)
                    if crate::balance::Endpoint::weight(b.as_ref()) == ep.weight
                        && b.conns().protocol() == config.protocol =>
                {
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
        Pool {
            name: config.name.as_str().into(),
            settings,
            selector_options,
            set: ArcSwap::from_pointee(set),
            metrics: metrics.pool(&config.name),
        }
    }

    /// This pool's metric handles.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.metrics
    }

    /// The pool's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Settings for forwarding.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Picks an available backend and leases it.
    ///
    /// Hot path: one `ArcSwap` load, one selector call, one atomic increment.
    pub fn pick(&self, now: Instant) -> Result<Lease, ProxyError> {
        let set = self.set.load();
        let index = set.selector.pick(&set.backends, now);
        match index.and_then(|i| set.backends.get(i)) {
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
