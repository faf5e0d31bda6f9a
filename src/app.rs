//! Wiring: bind listeners, build the first snapshot, run, shut down in order.
//!
//! [`Weir::start_from_file`] is what `weir run` calls; [`Weir::start`] runs
//! an in-memory config (tests, `weir demo`). Shutdown ([`Weir::shutdown`])
//! follows the order that loses no request:
//!
//! 1. `/readyz` turns 503, so load balancers in front stop sending;
//! 2. listeners stop accepting (their sockets close, new connections are
//!    refused);
//! 3. every open connection is told to shut down gracefully (HTTP/1 closes
//!    after its current response, HTTP/2 sends GOAWAY);
//! 4. wait for in-flight requests, at most the grace period;
//! 5. cancel background tasks (reloader, probes, discovery) and stop the
//!    admin listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::{Config, ConfigError};
use crate::health;
use crate::metrics::Metrics;
use crate::reload::{
    self, Control, Lifecycle, PoolTaskSpawner, ReloadError, ReloadHandle, ReloadSummary,
};
use crate::server::BindError;
use crate::snapshot::{Shared, Snapshot};

/// Why weir could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The first apply failed for a reason a reload could also hit.
    #[error(transparent)]
    Reload(ReloadError),
    /// Metric registration failed (a bug: names collide). The registry's
    /// error is part of the message, not a `source`, so an error chain
    /// names it once.
    #[error("metrics registry: {0}")]
    Metrics(prometheus::Error),
}

impl From<prometheus::Error> for StartError {
    fn from(e: prometheus::Error) -> StartError {
        StartError::Metrics(e)
    }
}

impl StartError {
    /// The first apply failed. Only a config or bind error can stop it:
    /// the admin listener cannot have moved (it was bound from the same
    /// config), and there is a config, so no reload-only error applies.
    fn from_reload(e: ReloadError) -> StartError {
        match e {
            ReloadError::Config(e) => StartError::Config(e),
            ReloadError::Bind(e) => StartError::Bind(e),
            other => StartError::Reload(other),
        }
    }
}

/// A running weir instance.
#[derive(Debug)]
pub struct Weir {
    shared: Arc<Shared>,
    control: Arc<Control>,
    reload: ReloadHandle,
    admin_addr: SocketAddr,
    life: Lifecycle,
}

/// How shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every in-flight request finished within the grace period.
    pub drained: bool,
}

impl Weir {
    /// Loads `path` and starts; the file is then watched for changes and
    /// reread on SIGHUP and `POST /reload`.
    pub async fn start_from_file(path: &Path) -> Result<Weir, StartError> {
        let config = Config::load(path)?;
        Self::start_inner(config, Some(path.to_path_buf())).await
    }

    /// Starts from an in-memory config (no file to reload).
    pub async fn start(config: Config) -> Result<Weir, StartError> {
        Self::start_inner(config, None).await
    }

    /// Startup is a reload from the empty state: the admin listener binds
    /// (it cannot move later), then the first config goes through the same
    /// [`Control::apply`] as every reload, which binds the traffic
    /// listeners, builds the snapshot and starts the pool tasks.
    async fn start_inner(config: Config, path: Option<PathBuf>) -> Result<Weir, StartError> {
        let admin_listener = admin::bind(config.admin.bind)?;
        let admin_addr = admin_listener.local_addr();
        let metrics = Metrics::new()?;
        let shared = Arc::new(Shared::new(Snapshot::empty(&metrics), metrics));
        admin::gauges::register(&shared)?;
        let life = Lifecycle::default();
        let control = Arc::new(Control::new(
            Arc::clone(&shared),
            path,
            config.admin.bind,
            life.clone(),
            pool_task_spawner(),
        ));
        control
            .apply(config)
            .await
            .map_err(StartError::from_reload)?;
        let reload = reload::spawn(Arc::clone(&control), life.background.clone(), &life.tasks);
        let admin_ctx = Arc::new(admin::AdminCtx {
            shared: Arc::clone(&shared),
            reload: reload.clone(),
        });
        tracing::info!(address = %admin_addr, "admin listening");
        life.tasks.spawn(admin::serve(
            admin_listener,
            admin_ctx,
            life.background.clone(),
        ));
        life.tasks.spawn(sweep_idle_connections(
            Arc::clone(&shared),
            life.background.clone(),
        ));
        shared.set_ready();
        Ok(Weir {
            shared,
            control,
            reload,
            admin_addr,
            life,
        })
    }

    /// The bound address of the traffic listener `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared
            .listeners()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// All traffic listeners and their bound addresses.
    pub fn listeners(&self) -> Vec<(String, SocketAddr)> {
        self.shared.listeners()
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Shared state (snapshot, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Rereads the config file and applies it, like SIGHUP.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        self.reload.reload().await
    }

    /// Applies an in-memory config through the same transaction as a file
    /// reload.
    pub async fn apply(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        self.control.apply(config).await
    }

    /// Graceful shutdown; see the module docs for the order.
    pub async fn shutdown(self) -> ShutdownReport {
        let grace = self.shared.snapshot().config.server.shutdown_grace;
        let life = &self.life;
        self.shared.set_draining();
        life.stop_accepting.cancel();
        life.drain.cancel();
        life.connections.close();
        let drained = tokio::time::timeout(grace, life.connections.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(?grace, "grace period over; closing remaining connections");
        }
        life.background.cancel();
        life.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), life.tasks.wait()).await;
        ShutdownReport { drained }
    }
}

/// Background tasks per pool instance; started at startup and whenever a
/// reload builds a new pool instance, cancelled when it leaves: one driver
/// per discovery source, and the active health probes.
fn pool_task_spawner() -> PoolTaskSpawner {
    Arc::new(move |pool, config, cancel, tasks| {
        let Some(pc) = config.pools.iter().find(|p| *p.name == **pool.name()) else {
            return;
        };
        for (i, source) in pc.discovery.iter().enumerate() {
            crate::discovery::spawn(pool, i, source, cancel.child_token(), tasks);
        }
        let Some(policy) = pc.health.active.clone() else {
            return;
        };
        let observer = ProbeMetrics {
            pool: Arc::clone(pool),
        };
        let targets = {
            let pool = Arc::clone(pool);
            move || pool.backends().backends().to_vec()
        };
        tasks.spawn(crate::probe::run(
            Arc::clone(pool.name()),
            targets,
            policy,
            cancel,
            observer,
        ));
    })
}

/// Feeds active probe results into the pool's and endpoints' metrics.
struct ProbeMetrics {
    pool: Arc<crate::upstream::Pool>,
}

impl ProbeMetrics {
    fn with_backend(&self, addr: SocketAddr, f: impl FnOnce(&crate::upstream::Backend)) {
        let set = self.pool.backends();
        if let Some(b) = set.backends().iter().find(|b| b.addr() == addr) {
            f(b);
        }
    }
}

impl crate::probe::ProbeObserver for ProbeMetrics {
    fn probed(&self, addr: SocketAddr, ok: bool, latency: Duration) {
        self.pool
            .metrics()
            .probe_duration
            .observe(latency.as_secs_f64());
        self.with_backend(addr, |b| {
            if let Some(c) = b.metrics().probes.get(usize::from(!ok)) {
                c.inc();
            }
        });
    }

    fn transition(&self, addr: SocketAddr, to: health::Health) {
        let i = usize::from(to != health::Health::Healthy);
        self.with_backend(addr, |b| {
            if let Some(c) = b.metrics().transitions.get(i) {
                c.inc();
            }
        });
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
