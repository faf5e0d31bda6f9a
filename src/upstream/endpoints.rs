//! What a pool's endpoints are made of: the complete sets that static
//! config and registry sources report, and each source's health.
//!
//! These types live in `upstream` (not `discovery`) because the pool merges
//! them: discovery sources write sets into a pool, and the pool never
//! needs to know which source kind produced one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

/// One discovered endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// Relative weight, at least 1.
    pub weight: u32,
    /// Failover tier; lower is preferred (DNS SRV priority). 0 elsewhere.
    pub priority: u16,
}

/// The complete set a source reports, keyed by address, so equality is
/// cheap and order-independent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSet(pub BTreeMap<SocketAddr, Endpoint>);

impl EndpointSet {
    /// An empty set.
    pub fn new() -> Self {
        EndpointSet::default()
    }

    /// Adds an endpoint; a duplicate address keeps the first entry.
    pub fn insert(&mut self, addr: SocketAddr, weight: u32, priority: u16) {
        self.0.entry(addr).or_insert(Endpoint {
            weight: weight.max(1),
            priority,
        });
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A source's health, for `/status`.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    /// The source's name (`dns[0]`, or its configured name).
    pub name: String,
    /// `ok`, `stale` (the last contact failed; last good set kept),
    /// `expired` (no successful contact for longer than `max_stale`;
    /// contribution dropped) or `pending` (no answer yet).
    pub state: &'static str,
    /// Endpoints it contributes now.
    pub endpoints: usize,
    /// Last successful contact with the registry (a changed or unchanged
    /// answer); `max_stale` counts from it.
    pub last_success: Option<SystemTime>,
    /// Last error, if the latest refresh failed.
    pub last_error: Option<String>,
    /// Refreshes that failed in a row.
    pub consecutive_errors: u32,
}
