//! Wiring: bind listeners, build the first snapshot, run, shut down in order.
//!
//! [`Weir::start`] is what `weir run` and the tests call. Shutdown
//! ([`Weir::shutdown`]) follows the order that loses no request:
//!
//! 1. `/readyz` turns 503, so load balancers in front stop sending;
//! 2. listeners stop accepting (their sockets close, new connections are
//!    refused);
//! 3. every open connection is told to shut down gracefully (HTTP/1 closes
//!    after its current response, HTTP/2 sends GOAWAY);
//! 4. wait for in-flight requests, at most the grace period;
//! 5. cancel background tasks and stop the admin listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{self, admin, Listener};
use crate::snapshot::{Shared, Snapshot};

/// Why weir could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot bind listener `{name}` to {addr}: {source}")]
    Bind {
        /// Listener name (`admin` for the admin listener).
        name: String,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Metric registration failed (a bug: names collide).
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A running weir instance.
#[derive(Debug)]
pub struct Weir {
    shared: Arc<Shared>,
    listeners: Vec<(String, SocketAddr)>,
    admin_addr: SocketAddr,
    stop_accepting: CancellationToken,
    drain: CancellationToken,
    background: CancellationToken,
    connections: TaskTracker,
    tasks: TaskTracker,
    grace: Duration,
}

/// How shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every in-flight request finished within the grace period.
    pub drained: bool,
}

impl Weir {
    /// Binds every listener, then starts serving. Fails without serving
    /// anything if any bind fails.
    pub async fn start(config: Config) -> Result<Weir, StartError> {
        let metrics = Metrics::new()?;
        let config = Arc::new(config);
        let mut bound = Vec::with_capacity(config.listeners.len());
        for lc in &config.listeners {
            let l = Listener::bind(&lc.name, lc.bind).map_err(|source| StartError::Bind {
                name: lc.name.clone(),
                addr: lc.bind,
                source,
            })?;
            bound.push(l);
        }
        let admin_listener = admin::bind(config.admin.bind).map_err(|source| StartError::Bind {
            name: "admin".into(),
            addr: config.admin.bind,
            source,
        })?;
        let admin_addr = admin_listener.local_addr();

        let snapshot = Snapshot::build(Arc::clone(&config), 1, None, &metrics);
        let shared = Arc::new(Shared::new(snapshot, metrics));
        shared.metrics.register_state(Arc::downgrade(&shared))?;
        shared.metrics.config_loaded(true);
        let stop_accepting = CancellationToken::new();
        let drain = CancellationToken::new();
        let background = CancellationToken::new();
        let connections = TaskTracker::new();
        let tasks = TaskTracker::new();

        let listeners: Vec<(String, SocketAddr)> = bound
            .iter()
            .map(|l| (l.name().to_owned(), l.local_addr()))
            .collect();
        for l in bound {
            let metrics = shared.metrics.listener(l.name());
            tracing::info!(listener = l.name(), address = %l.local_addr(), "listening");
            tasks.spawn(server::serve(
                l,
                Arc::clone(&shared),
                config.server.clone(),
                metrics,
                stop_accepting.clone(),
                drain.clone(),
                connections.clone(),
            ));
        }
        let admin_ctx = Arc::new(admin::AdminCtx {
            shared: Arc::clone(&shared),
            listeners: listeners.clone(),
        });
        tracing::info!(address = %admin_addr, "admin listening");
        tasks.spawn(admin::serve(admin_listener, admin_ctx, background.clone()));
        tasks.spawn(sweep_idle_connections(
            Arc::clone(&shared),
            background.clone(),
        ));
        shared.set_ready();
        Ok(Weir {
            shared,
            listeners,
            admin_addr,
            stop_accepting,
            drain,
            background,
            connections,
            tasks,
            grace: config.server.shutdown_grace,
        })
    }

    /// The bound address of the traffic listener `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// All traffic listeners and their bound addresses.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Shared state (snapshot, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Graceful shutdown; see the module docs for the order.
    pub async fn shutdown(self) -> ShutdownReport {
        self.shared.set_draining();
        self.stop_accepting.cancel();
        self.drain.cancel();
        self.connections.close();
        let drained = tokio::time::timeout(self.grace, self.connections.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(grace = ?self.grace, "grace period over; closing remaining connections");
        }
        self.background.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        ShutdownReport { drained }
    }
}

/// Closes pooled upstream connections that outlived the idle timeout, so an
/// idle weir does not hold sockets the endpoints have long forgotten.
async fn sweep_idle_connections(shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                let snap = shared.snapshot_full();
                for pool in &snap.pools {
                    pool.sweep_idle();
                }
            }
        }
    }
}
