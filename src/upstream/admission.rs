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
        if self.gate().is_open() {
            return Ok((self.pick(now)?, Admission::default()));
        }
        Box::pin(self.admit_queued()).await
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
        let mut admission = Admission {
            pool: gate.pool_slot(deadline).await.map_err(|()| self.reject())?,
            endpoint: None,
        };
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
