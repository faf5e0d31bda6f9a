//! Gauges computed from the live snapshot at scrape time: endpoint health,
//! ejection, in-flight and weight, pool panic and endpoint counts, and the
//! config version.
//!
//! They are not kept up to date on the request path (a request would pay
//! for every state change); the scrape walks the current snapshot instead,
//! so removed endpoints simply vanish. The collector lives here, above
//! `snapshot`, so that `metrics` stays below everything it measures.

use std::sync::{Arc, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};

use crate::balance::Endpoint;
use crate::snapshot::Shared;

/// Registers the state gauges of `shared` with its metrics registry. The
/// collector holds a weak reference, so it never keeps the state alive.
pub fn register(shared: &Arc<Shared>) -> prometheus::Result<()> {
    let collector = StateCollector::new(Arc::downgrade(shared))?;
    shared.metrics.register_collector(Box::new(collector))
}

/// Gauges read from the current snapshot at scrape time.
struct StateCollector {
    shared: Weak<Shared>,
    descs: Vec<Desc>,
}

/// The state gauge families, built fresh for every scrape so that removed
/// endpoints simply vanish and concurrent scrapes never share state.
struct StateGauges {
    healthy: IntGaugeVec,
    ejected: IntGaugeVec,
    panic: IntGaugeVec,
    in_flight: IntGaugeVec,
    weight: IntGaugeVec,
    endpoints: IntGaugeVec,
    config_version: IntGaugeVec,
}

impl StateGauges {
    fn new() -> prometheus::Result<Self> {
        Ok(StateGauges {
            healthy: IntGaugeVec::new(
                Opts::new(
                    "weir_upstream_healthy",
                    "Active health verdict of an endpoint: 1 healthy (or no active checks), 0 unhealthy.",
                ),
                &["pool", "endpoint"],
            )?,
            ejected: IntGaugeVec::new(
                Opts::new(
                    "weir_upstream_ejected",
                    "1 while an endpoint is passively ejected.",
                ),
                &["pool", "endpoint"],
            )?,
            panic: IntGaugeVec::new(
                Opts::new(
                    "weir_pool_panic",
                    "1 while a pool is in panic mode (balancing over all endpoints).",
                ),
                &["pool"],
            )?,
            in_flight: IntGaugeVec::new(
                Opts::new(
                    "weir_upstream_in_flight",
                    "Requests in flight to an endpoint (response body not finished).",
                ),
                &["pool", "endpoint"],
            )?,
            weight: IntGaugeVec::new(
                Opts::new("weir_upstream_weight", "Configured weight of an endpoint."),
                &["pool", "endpoint"],
            )?,
            endpoints: IntGaugeVec::new(
                Opts::new(
                    "weir_pool_endpoints",
                    "Endpoints in a pool by state (`available` or `unavailable`).",
                ),
                &["pool", "state"],
            )?,
            config_version: IntGaugeVec::new(
                Opts::new(
                    "weir_config_version",
                    "Version of the running config (increases with every successful load); `hash` identifies its content.",
                ),
                &["hash"],
            )?,
        })
    }

    fn all(&self) -> [&IntGaugeVec; 7] {
        [
            &self.healthy,
            &self.ejected,
            &self.panic,
            &self.in_flight,
            &self.weight,
            &self.endpoints,
            &self.config_version,
        ]
    }
}

impl StateCollector {
    fn new(shared: Weak<Shared>) -> prometheus::Result<Self> {
        let gauges = StateGauges::new()?;
        let descs = gauges
            .all()
            .iter()
            .flat_map(|v| v.desc().into_iter().cloned())
            .collect();
        Ok(StateCollector { shared, descs })
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (Some(shared), Ok(g)) = (self.shared.upgrade(), StateGauges::new()) else {
            return Vec::new();
        };
        let snap = shared.snapshot_full();
        let now = tokio::time::Instant::now();
        for pool in &snap.pools {
            let set = pool.backends();
            let mut available = 0usize;
            for b in set.backends() {
                let ep = b.addr().to_string();
                g.in_flight
                    .with_label_values(&[&**pool.name(), ep.as_str()])
                    .set(i64::from(b.in_flight()));
                g.weight
                    .with_label_values(&[&**pool.name(), ep.as_str()])
                    .set(i64::from(b.weight()));
                g.healthy
                    .with_label_values(&[&**pool.name(), ep.as_str()])
                    .set(i64::from(
                        b.health().active() == crate::health::Health::Healthy,
                    ));
                g.ejected
                    .with_label_values(&[&**pool.name(), ep.as_str()])
                    .set(i64::from(b.health().is_ejected(now)));
                available += usize::from(b.is_available(now));
            }
            let unavailable = set.backends().len() - available;
            g.panic
                .with_label_values(&[&**pool.name()])
                .set(i64::from(pool.in_panic()));
            g.endpoints
                .with_label_values(&[&**pool.name(), "available"])
                .set(available as i64);
            g.endpoints
                .with_label_values(&[&**pool.name(), "unavailable"])
                .set(unavailable as i64);
        }
        g.config_version
            .with_label_values(&[&snap.config.hash])
            .set(snap.version as i64);
        g.all().iter().flat_map(|v| v.collect()).collect()
    }
}
