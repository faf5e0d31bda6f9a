//! Admission: a pick that first takes the pool's request slots
//! (`pools[].limits`, enforced by [`PoolGate`]).
//!
//! **Per-endpoint rule.** With `max_requests_per_endpoint`, the selector
//! picks as usual; if its pick is at the limit, the request goes to the
//! available endpoint with the most free slots instead, and only when every
//! available endpoint is full does it wait, up to `queue_timeout`, for a
//! slot on the selector's pick.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Lease, Pool};
use crate::balance::Endpoint as _;
use crate::error::ProxyError;
use crate::limits::{Admission, PoolGate};

impl Pool {
    /// Picks and leases an endpoint, first taking the pool's request slots
    /// (see the module docs for the rule). Waits at most the pool's
    /// `queue_timeout`; then 503 and `weir_pool_limit_rejected_total`
    /// counts it.
    ///
    /// Without request caps this is a plain pick. The queueing path is
    /// boxed: its future is large, and every request's future (which the
    /// connection keeps for its whole life) would otherwise grow by it.
    pub async fn admit(&self, now: Instant) -> Result<(Lease, Admission), ProxyError> {
        if !self.breaker().is_off() {
            return Box::pin(self.admit_guarded(now)).await;
        }
        self.admit_gated(now).await
    }

    /// Admission through the request slots alone.
    async fn admit_gated(&self, now: Instant) -> Result<(Lease, Admission), ProxyError> {
        if self.gate().is_open() {
            return Ok((self.pick(now)?, Admission::default()));
        }
        Box::pin(self.admit_queued()).await
    }

    /// Admission for a pool with a circuit breaker: its request unit
    /// first (refused at once at `max_requests`), then the slots, then the
    /// connection threshold for a request that must open a connection.
    async fn admit_guarded(&self, now: Instant) -> Result<(Lease, Admission), ProxyError> {
        let unit = self.breaker().request().map_err(|t| self.trip(t))?;
        let (lease, mut admission) = self.admit_gated(now).await?;
        if lease.backend().idle_connections() == 0 {
            let open = self.open_connections().saturating_sub(1);
            self.breaker().may_connect(open).map_err(|t| self.trip(t))?;
        }
        admission.breaker = Some(unit);
        Ok((lease, admission))
    }

    /// Upstream connections open to the pool's endpoints, counting one
    /// per HTTP/1.1 request in flight (each holds its own connection) and
    /// the idle ones; for HTTP/2, one per endpoint with a live connection.
    pub fn open_connections(&self) -> usize {
        let set = self.backends();
        set.backends()
            .iter()
            .map(|b| match b.conns().protocol() {
                crate::config::UpstreamProtocol::Http1 => {
                    b.in_flight() as usize + b.idle_connections()
                }
                crate::config::UpstreamProtocol::H2c => {
                    b.idle_connections().max(usize::from(b.in_flight() > 0))
                }
            })
            .sum()
    }

    /// Counts a breaker refusal and makes its error.
    pub fn trip(&self, threshold: crate::limits::breaker::Threshold) -> ProxyError {
        self.metrics().breaker_rejected(threshold);
        ProxyError::CircuitOpen {
            pool: Arc::clone(self.name()),
            threshold: threshold.as_str(),
        }
    }

    /// A unit of `max_pending_requests` for a request about to wait, or
    /// the breaker's refusal.
    fn pending(&self) -> Result<Option<crate::limits::breaker::Slot>, ProxyError> {
        if self.breaker().config().max_pending_requests.is_none() {
            return Ok(None);
        }
        self.breaker().pending().map(Some).map_err(|t| self.trip(t))
    }

    fn reject(&self) -> ProxyError {
        self.metrics().limit_rejected.inc();
        ProxyError::Overloaded {
            pool: Arc::clone(self.name()),
        }
    }

    /// [`Pool::admit`] for a pool with request caps.
    async fn admit_queued(&self) -> Result<(Lease, Admission), ProxyError> {
        let gate = self.gate();
        let deadline = Instant::now() + gate.limits().queue_timeout;
        let waits = gate.available() == Some(0);
        let pending = if waits { self.pending()? } else { None };
        let mut admission = Admission {
            pool: gate.pool_slot(deadline).await.map_err(|()| self.reject())?,
            endpoint: None,
            breaker: None,
        };
        drop(pending);
        let lease = self.pick(Instant::now())?;
        let Some(max) = gate.limits().max_requests_per_endpoint else {
            return Ok((lease, admission));
        };
        let set = self.backends();
        let live: Vec<SocketAddr> = set.backends().iter().map(|b| b.addr()).collect();
        let first = gate.endpoint(lease.backend().addr(), max, &live);
        if let Ok(p) = Arc::clone(&first).try_acquire_owned() {
            admission.endpoint = Some(p);
            return Ok((lease, admission));
        }
        if let Some(other) = self.least_full(gate, &lease, max, &live) {
            return Ok(other.with_pool_slot(admission));
        }
        // Every endpoint is full: wait for the selector's pick.
        let _pending = self.pending()?;
        match tokio::time::timeout_at(deadline, first.acquire_owned()).await {
            Ok(Ok(p)) => {
                admission.endpoint = Some(p);
                Ok((lease, admission))
            }
            _ => Err(self.reject()),
        }
    }

    /// The pick is full: a slot on the available endpoint with the most
    /// free slots, if one has any.
    fn least_full(
        &self,
        gate: &PoolGate,
        lease: &Lease,
        max: usize,
        live: &[SocketAddr],
    ) -> Option<Admitted> {
        let now = Instant::now();
        let set = self.backends();
        let (backend, sem) = set
            .backends()
            .iter()
            .filter(|b| b.addr() != lease.backend().addr() && b.is_available(now))
            .map(|b| (b, gate.endpoint(b.addr(), max, live)))
            .max_by_key(|(_, s)| s.available_permits())?;
        let permit = sem.try_acquire_owned().ok()?;
        Some(Admitted {
            lease: Lease::new(Arc::clone(backend)),
            endpoint: permit,
        })
    }
}

/// A lease on another endpoint with that endpoint's slot.
struct Admitted {
    lease: Lease,
    endpoint: tokio::sync::OwnedSemaphorePermit,
}

impl Admitted {
    fn with_pool_slot(self, mut admission: Admission) -> (Lease, Admission) {
        admission.endpoint = Some(self.endpoint);
        (self.lease, admission)
    }
}
