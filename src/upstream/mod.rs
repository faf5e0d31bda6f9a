//! Upstream endpoints: identity, load, and the connections to them.
//!
//! A [`Backend`] is one endpoint of one pool, shared by `Arc`. Its identity is
//! its address; the same `Arc<Backend>` is kept across endpoint updates and
//! reloads for as long as the address stays in the pool, so its in-flight
//! count, latency estimate and idle connections survive (pingora's
//! `Backends::do_update`, linkerd's `reset_pool`).
//!
//! A [`Lease`] is the RAII in-flight guard: taken when the selector picks the
//! backend, released when the response body ends or is dropped, so the count
//! that least-connections and P2C read can never leak (tower's
//! `PendingRequests` handle).

mod admission;
pub mod body;
pub mod buffers;
mod client;
pub mod endpoints;
pub mod h1;
pub mod headers;
pub mod pipe;
mod pool;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::balance::{Endpoint, EndpointLoad};
use crate::config::UpstreamProtocol;
use crate::health::{HealthCell, Probed};
use crate::metrics::EndpointMetrics;

pub use client::{ConnectSettings, SendError};
pub use pool::{BackendSet, Pool, PoolSettings};

/// One endpoint of a pool.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    weight: u32,
    load: EndpointLoad,
    conns: client::ConnPool,
    metrics: EndpointMetrics,
    health: HealthCell,
}

impl Backend {
    /// A new backend with no connections and no load; `tls` is the pool's
    /// upstream TLS settings (`None`: cleartext).
    pub fn new(
        addr: SocketAddr,
        weight: u32,
        protocol: UpstreamProtocol,
        tls: Option<crate::tls::upstream::UpstreamTls>,
        metrics: EndpointMetrics,
    ) -> Self {
        Backend {
            addr,
            weight: weight.max(1),
            load: EndpointLoad::default(),
            conns: client::ConnPool::new(addr, protocol, tls, metrics.stale_retries.clone()),
            metrics,
            health: HealthCell::new(),
        }
    }

    /// This endpoint's metric handles.
    pub fn metrics(&self) -> &EndpointMetrics {
        &self.metrics
    }

    /// The endpoint's address, its identity.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests whose response body has not finished.
    pub fn in_flight(&self) -> u32 {
        self.load.in_flight()
    }

    /// Idle keep-alive connections currently pooled (HTTP/1) or open (HTTP/2).
    pub fn idle_connections(&self) -> usize {
        self.conns.idle_count()
    }

    /// Active verdict and passive ejection state.
    pub fn health(&self) -> &HealthCell {
        &self.health
    }

    pub(crate) fn conns(&self) -> &client::ConnPool {
        &self.conns
    }
}

impl Endpoint for Backend {
    fn weight(&self) -> u32 {
        self.weight
    }

    fn load(&self) -> &EndpointLoad {
        &self.load
    }

    fn is_available(&self, now: Instant) -> bool {
        self.health.is_available(now)
    }
}

impl Probed for Backend {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn health(&self) -> &HealthCell {
        &self.health
    }
}

/// In-flight guard for one request on one backend.
#[derive(Debug)]
pub struct Lease {
    backend: Arc<Backend>,
    rtt: Option<Duration>,
}

impl Lease {
    /// Counts a request as started on `backend`.
    pub fn new(backend: Arc<Backend>) -> Self {
        backend.load.start();
        Lease { backend, rtt: None }
    }

    /// The leased backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Records the time to response headers, fed to the latency estimate
    /// when the lease ends.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(rtt);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.backend.load.finish(self.rtt, Instant::now());
    }
}
