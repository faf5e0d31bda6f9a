//! Prometheus metrics: families registered once, handles resolved once.
//!
//! [`Metrics`] owns the registry served on the admin listener's `/metrics`.
//! Per-listener handles are resolved when a listener starts
//! ([`ListenerMetrics`]), so the request path only touches atomics and never
//! hashes label strings.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Metric families and their registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    connections_total: IntCounterVec,
    connections_open: IntGaugeVec,
}

/// Handles for one listener.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    /// Connections accepted.
    pub connections_total: IntCounter,
    /// Connections currently open.
    pub connections_open: IntGauge,
}

impl Metrics {
    /// Registers every family in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("weir_build_info", "Build information; always 1."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        let connections_total = IntCounterVec::new(
            Opts::new(
                "weir_downstream_connections_total",
                "Client connections accepted, by listener.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(connections_total.clone()))?;
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "weir_downstream_connections_open",
                "Client connections currently open, by listener.",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            connections_total,
            connections_open,
        })
    }

    /// Handles for the listener `name`.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            connections_total: self.connections_total.with_label_values(&[name]),
            connections_open: self.connections_open.with_label_values(&[name]),
        }
    }

    /// The text exposition (format 0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}
