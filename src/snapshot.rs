//! The state the request path reads: one immutable [`Snapshot`] behind one
//! `ArcSwap`, inside [`Shared`].
//!
//! The control plane (startup, reload) builds a complete new snapshot and
//! stores it in one step, so a request sees the old config or the new one,
//! never a mix. A request holds the `Arc<Pool>` it routed to, so it finishes
//! on the pool it started with even if a reload removes that pool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::metrics::{Metrics, RouteMetrics};
use crate::middleware::{Chain, Set};
use crate::routing::RoutingTable;
use crate::upstream::Pool;

/// What a route leads to: the pool and the route's metric handles.
#[derive(Clone, Debug)]
pub struct RouteTarget {
    /// The pool serving the route.
    pub pool: Arc<Pool>,
    /// Request counters of this route.
    pub metrics: Arc<RouteMetrics>,
    /// The route's middleware, if it lists any.
    pub chain: Option<Arc<Chain>>,
}

/// Everything a request needs from the configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every successful (re)load.
    pub version: u64,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    /// The validated config it was built from.
    pub config: Arc<Config>,
    /// Host/path → pool.
    pub routes: RoutingTable<RouteTarget>,
    /// Pools by name, in config order.
    pub pools: Vec<Arc<Pool>>,
    /// Whether to write an access-log line per request.
    pub access_log: bool,
    /// Pseudonym for the `Via` header, if configured.
    pub via: Option<Arc<str>>,
    /// Middleware instances by name (kept across reloads when unchanged).
    pub middleware: Set,
}

impl Snapshot {
    /// Version 0: the empty state a starting weir applies its first config
    /// to ([`Config::empty`]: no listeners, routes or pools).
    pub fn empty(metrics: &Metrics) -> Snapshot {
        Snapshot::build(Arc::new(Config::empty()), 0, None, metrics)
    }

    /// Builds a snapshot. Pools of `previous` whose config is unchanged are
    /// reused as they are; in changed pools, backends whose address and
    /// weight are unchanged are reused, with their load and connections.
    /// Middleware whose config is unchanged are reused with their state.
    pub fn build(
        config: Arc<Config>,
        version: u64,
        previous: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Snapshot {
        let mut pools = Vec::with_capacity(config.pools.len());
        for pc in &config.pools {
            let old = previous.and_then(|p| {
                let i = p.config.pools.iter().position(|o| o.name == pc.name)?;
                Some((p.config.pools.get(i)?, p.pools.get(i)?))
            });
            let pool = match old {
                Some((old_cfg, old_pool)) if old_cfg == pc => Arc::clone(old_pool),
                Some((old_cfg, old_pool)) => {
                    Arc::new(Pool::new(pc, Some((old_cfg, old_pool)), metrics))
                }
                None => Arc::new(Pool::new(pc, None, metrics)),
            };
            pools.push(pool);
        }
        let route_metrics: HashMap<&str, Arc<RouteMetrics>> = config
            .routes
            .iter()
            .map(|r| (r.name.as_str(), Arc::new(metrics.route(&r.name, &r.pool))))
            .collect();
        let middleware = Set::build(&config.middleware, previous.map(|p| &p.middleware));
        let trusted: Arc<[ipnet::IpNet]> = config.trusted_proxies.as_slice().into();
        let routes = RoutingTable::new(&config.routes, |route| {
            let pool = pools.iter().find(|p| **p.name() == *route.pool)?;
            Some(RouteTarget {
                pool: Arc::clone(pool),
                metrics: Arc::clone(route_metrics.get(route.name.as_str())?),
                chain: middleware.chain(route, &trusted, metrics),
            })
        });
        Snapshot {
            version,
            loaded_at: SystemTime::now(),
            access_log: config.access_log.enabled,
            via: config.headers.via.as_deref().map(Arc::from),
            routes,
            pools,
            middleware,
            config,
        }
    }
}

/// State shared by every connection: the current snapshot and the metrics.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// Metric families and the registry served on `/metrics`.
    pub metrics: Metrics,
    /// Counters for requests that matched no route.
    pub unrouted: RouteMetrics,
    ready: AtomicBool,
    draining: AtomicBool,
    listeners: std::sync::Mutex<Vec<(String, SocketAddr)>>,
}

impl Shared {
    /// Wraps the first snapshot.
    pub fn new(snapshot: Snapshot, metrics: Metrics) -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            unrouted: metrics.route("", ""),
            metrics,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            listeners: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The current snapshot (a cheap guard; do not hold across `.await`).
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn snapshot_full(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot (control plane).
    pub fn store(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Traffic listeners by name and bound address (for status and tests).
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Records the running listeners (control plane).
    pub fn set_listeners(&self, listeners: Vec<(String, SocketAddr)>) {
        if let Ok(mut l) = self.listeners.lock() {
            *l = listeners;
        }
    }

    /// Listeners are bound and the config is loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Shutdown has begun.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Ready and not draining: what `/readyz` reports.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.load(Ordering::Acquire)
    }
}
