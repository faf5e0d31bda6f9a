//! Hot reload: parse → validate → diff → build → one atomic swap.
//!
//! Three triggers feed one reloader task (module `watch`), so reloads never
//! overlap: a file watcher, SIGHUP, and `POST /reload` on the admin listener
//! (which waits for the result). The watcher watches the directories the
//! config file and its certificate, key and CA files are named in, and
//! reacts only to changes (not opens or reads) of those files, or of a
//! symlink they resolve through (a Kubernetes ConfigMap's `..data`); other
//! files in those directories are ignored. A burst of relevant events is
//! debounced: the files are reread 150 ms after the last relevant event,
//! and at most 600 ms after the first. A reread whose content hash equals
//! the running config's is skipped. A file that fails to load fails one
//! reload and is not retried until it changes again; after a failure the
//! next change reloads even when it restores the running content, so that
//! clears the failure. The exact rules are in the `watch` module.
//!
//! The transaction (`Control::apply`):
//!
//! 1. parse and validate with [`Config::from_yaml`] — the same code path as
//!    `weir check` and startup;
//! 2. bind the listeners that are new (any bind error aborts here, with
//!    nothing changed);
//! 3. build the new [`Snapshot`]: unchanged pools are the same `Arc<Pool>`
//!    (same backends, connections, counters, health), changed pools reuse
//!    the `Arc<Backend>` of every unchanged endpoint;
//! 4. `ArcSwap::store` it; requests already routed finish on the pool they
//!    hold;
//! 5. start the new listeners, stop accepting on removed ones and drain
//!    their connections; restart background tasks of new or rebuilt pools
//!    and cancel those of removed ones.
//!
//! Any error before step 4 leaves the running config untouched, is logged
//! with its key path and line, and counts a failed reload.
//!
//! # TLS files
//!
//! Certificate, key and CA files are part of the config: they are read
//! during validation, and their bytes are in the config's equality and
//! content hash. The watcher also watches every such file of the running
//! config, so replacing a certificate on disk reloads. A listener is
//! identified by name and bind address: when only its `tls:` settings or
//! files changed, its socket and open connections stay, and its new rustls
//! config is swapped in for the next handshakes.

mod watch;

pub(crate) use watch::spawn;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, ListenerConfig};
use crate::server::tls::{TlsRuntime, TlsSlot};
use crate::server::{self, Listener};
use crate::snapshot::{Shared, Snapshot};
use crate::upstream::Pool;

/// Why a reload was refused. The running config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read or is not a valid config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A new listener could not bind.
    #[error(transparent)]
    Bind(#[from] crate::server::BindError),
    /// Changing the admin listener's address needs a restart.
    #[error(
        "admin.bind changed from {from} to {to}; the admin listener cannot move without a restart"
    )]
    AdminMoved {
        /// Running address.
        from: SocketAddr,
        /// Requested address.
        to: SocketAddr,
    },
    /// weir was started without a config file, so there is nothing to reread.
    #[error("no config file to reload (weir was started from an in-memory config)")]
    NoFile,
    /// The reloader has stopped (shutdown in progress).
    #[error("shutting down")]
    ShuttingDown,
}

/// What a successful reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSummary {
    /// The new config version.
    pub version: u64,
    /// Content hash of the new config.
    pub hash: String,
    /// False when the new config equals the running one (nothing swapped).
    pub changed: bool,
    /// Pools that are new.
    pub pools_added: Vec<String>,
    /// Pools that are gone.
    pub pools_removed: Vec<String>,
    /// Pools rebuilt because their settings or endpoints changed.
    pub pools_changed: Vec<String>,
    /// Endpoints added, as `pool/address`.
    pub endpoints_added: Vec<String>,
    /// Endpoints removed, as `pool/address`.
    pub endpoints_removed: Vec<String>,
    /// Listeners that are new.
    pub listeners_added: Vec<String>,
    /// Listeners that are gone (draining).
    pub listeners_removed: Vec<String>,
    /// Listeners kept (same socket, same connections) whose TLS settings
    /// or certificate files changed and were swapped in place.
    pub listeners_tls_changed: Vec<String>,
}

/// A running traffic listener.
#[derive(Debug)]
struct RunningListener {
    config: ListenerConfig,
    tls: TlsSlot,
    local_addr: SocketAddr,
    stop: CancellationToken,
    drain: CancellationToken,
}

/// Background work owned by one pool instance (health probes, discovery);
/// cancelled when that instance leaves the snapshot.
#[derive(Debug)]
struct PoolTasks {
    pool: Arc<Pool>,
    cancel: CancellationToken,
}

/// Starts background tasks for a pool; returns nothing to keep but the
/// token it was given. Health probes and discovery register here.
pub type PoolTaskSpawner =
    Arc<dyn Fn(&Arc<Pool>, &Config, CancellationToken, &TaskTracker) + Send + Sync>;

/// The control plane's mutable state: listeners and per-pool tasks. Only
/// the reloader and startup touch it, under one async mutex.
pub(crate) struct Control {
    pub(crate) shared: Arc<Shared>,
    pub(crate) path: Option<PathBuf>,
    state: tokio::sync::Mutex<ControlState>,
    stop_root: CancellationToken,
    drain_root: CancellationToken,
    background: CancellationToken,
    connections: TaskTracker,
    tasks: TaskTracker,
    spawner: PoolTaskSpawner,
}

struct ControlState {
    listeners: Vec<RunningListener>,
    pool_tasks: HashMap<String, PoolTasks>,
    admin_bind: SocketAddr,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        shared: Arc<Shared>,
        path: Option<PathBuf>,
        admin_bind: SocketAddr,
        stop_root: CancellationToken,
        drain_root: CancellationToken,
        background: CancellationToken,
        connections: TaskTracker,
        tasks: TaskTracker,
        spawner: PoolTaskSpawner,
    ) -> Control {
        Control {
            shared,
            path,
            state: tokio::sync::Mutex::new(ControlState {
                listeners: Vec::new(),
                pool_tasks: HashMap::new(),
                admin_bind,
            }),
            stop_root,
            drain_root,
            background,
            connections,
            tasks,
            spawner,
        }
    }

    /// Starts serving already-bound listeners (startup).
    pub(crate) async fn start_listeners(&self, bound: Vec<(ListenerConfig, Listener)>) {
        let mut state = self.state.lock().await;
        for (config, l) in bound {
            state.listeners.push(self.spawn_listener(config, l));
        }
        self.publish_listeners(&state);
    }

    fn publish_listeners(&self, state: &ControlState) {
        self.shared.set_listeners(
            state
                .listeners
                .iter()
                .map(|l| (l.config.name.clone(), l.local_addr))
                .collect(),
        );
    }

    /// Starts the background tasks of every pool in the current snapshot
    /// (startup).
    pub(crate) async fn start_pool_tasks(&self) {
        let snap = self.shared.snapshot_full();
        let mut state = self.state.lock().await;
        for pool in &snap.pools {
            let t = self.spawn_pool_tasks(pool, &snap.config);
            state.pool_tasks.insert(pool.name().to_string(), t);
        }
    }

    fn spawn_listener(&self, config: ListenerConfig, l: Listener) -> RunningListener {
        let stop = self.stop_root.child_token();
        let drain = self.drain_root.child_token();
        let local_addr = l.local_addr();
        tracing::info!(listener = %config.name, address = %local_addr, "listening");
        let metrics = self.shared.metrics.listener(&config.name);
        let tls: TlsSlot = Arc::new(arc_swap::ArcSwapOption::new(self.tls_runtime(&config)));
        self.tasks.spawn(server::serve(
            l,
            Arc::clone(&self.shared),
            metrics,
            Arc::clone(&tls),
            stop.clone(),
            drain.clone(),
            self.connections.clone(),
        ));
        RunningListener {
            config,
            tls,
            local_addr,
            stop,
            drain,
        }
    }

    /// The per-handshake TLS state of a listener config (and its
    /// certificate expiry gauges).
    fn tls_runtime(&self, config: &ListenerConfig) -> Option<Arc<TlsRuntime>> {
        let tls = config.tls.as_ref()?;
        for c in &tls.certificates {
            self.shared
                .metrics
                .set_certificate_expiry(&config.name, &c.label, c.not_after);
        }
        Some(Arc::new(TlsRuntime {
            config: Arc::clone(tls.server_config()),
            handshake_timeout: tls.handshake_timeout,
            metrics: self.shared.metrics.tls(&config.name),
        }))
    }

    /// Removes the TLS series of `old` that `new` (if any) does not have.
    fn remove_tls_metrics(&self, old: &ListenerConfig, new: Option<&ListenerConfig>) {
        let Some(old_tls) = &old.tls else { return };
        let new_tls = new.and_then(|n| n.tls.as_ref());
        let metrics = &self.shared.metrics;
        for c in &old_tls.certificates {
            if !new_tls.is_some_and(|t| t.certificates.iter().any(|n| n.label == c.label)) {
                metrics.remove_certificate_expiry(&old.name, &c.label);
            }
        }
        if new_tls.is_none() {
            metrics.remove_tls(&old.name);
        }
    }

    /// Swaps a kept listener's TLS settings in place: new handshakes use
    /// `config`'s certificates, open connections are untouched.
    fn swap_tls(&self, running: &mut RunningListener, config: &ListenerConfig) {
        self.remove_tls_metrics(&running.config, Some(config));
        running.tls.store(self.tls_runtime(config));
        let serials: Vec<&str> = config
            .tls
            .iter()
            .flat_map(|t| t.certificates.iter().map(|c| c.serial.as_str()))
            .collect();
        tracing::info!(
            listener = %config.name,
            tls = config.tls.is_some(),
            serials = ?serials,
            "listener TLS settings updated in place"
        );
        running.config = config.clone();
    }

    fn spawn_pool_tasks(&self, pool: &Arc<Pool>, config: &Config) -> PoolTasks {
        let cancel = self.background.child_token();
        (self.spawner)(pool, config, cancel.clone(), &self.tasks);
        PoolTasks {
            pool: Arc::clone(pool),
            cancel,
        }
    }

    /// Reads the config file and applies it.
    pub(crate) async fn reload_file(&self) -> Result<ReloadSummary, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let result = match Config::load(path) {
            Ok(config) => self.apply(config).await,
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(s) if s.changed => {
                self.shared.metrics.config_loaded(true);
                tracing::info!(
                    version = s.version,
                    hash = %s.hash,
                    pools_added = ?s.pools_added,
                    pools_removed = ?s.pools_removed,
                    pools_changed = ?s.pools_changed,
                    endpoints_added = ?s.endpoints_added,
                    endpoints_removed = ?s.endpoints_removed,
                    listeners_added = ?s.listeners_added,
                    listeners_removed = ?s.listeners_removed,
                    "config reloaded"
                );
            }
            Ok(_) => {
                self.shared.metrics.config_loaded(true);
                tracing::info!("config reloaded: no change");
            }
            Err(e) => {
                self.shared.metrics.config_loaded(false);
                tracing::error!(error = %e, "config reload failed; the running config keeps serving");
            }
        }
        result
    }

    /// Applies a validated config: the transaction in the module docs.
    pub(crate) async fn apply(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let mut state = self.state.lock().await;
        let old = self.shared.snapshot_full();
        if config.admin.bind != state.admin_bind {
            return Err(ReloadError::AdminMoved {
                from: state.admin_bind,
                to: config.admin.bind,
            });
        }
        if *old.config == config {
            return Ok(ReloadSummary {
                version: old.version,
                hash: old.config.hash.clone(),
                changed: false,
                ..ReloadSummary::default()
            });
        }

        for w in config.warnings() {
            tracing::warn!("{w}");
        }

        // 2. Bind new listeners first: a bind error must change nothing.
        let mut bound = Vec::new();
        for lc in &config.listeners {
            let keep = state
                .listeners
                .iter()
                .any(|r| same_socket(&r.config, lc) && !r.stop.is_cancelled());
            if keep {
                continue;
            }
            let l = Listener::bind(&lc.name, lc.bind)?;
            bound.push((lc.clone(), l));
        }

        // 3-4. Build and swap.
        let config = Arc::new(config);
        let version = old.version + 1;
        let next = Snapshot::build(
            Arc::clone(&config),
            version,
            Some(&old),
            &self.shared.metrics,
        );
        let mut summary = diff(&old, &next);
        summary.version = version;
        summary.hash = config.hash.clone();
        summary.changed = true;
        self.shared.store(next);
        let current = self.shared.snapshot_full();

        // 5. Listeners.
        let (kept, removed): (Vec<_>, Vec<_>) = std::mem::take(&mut state.listeners)
            .into_iter()
            .partition(|r| config.listeners.iter().any(|lc| same_socket(&r.config, lc)));
        for r in removed {
            tracing::info!(listener = %r.config.name, "listener removed; draining its connections");
            summary.listeners_removed.push(r.config.name.clone());
            self.remove_tls_metrics(&r.config, None);
            r.stop.cancel();
            r.drain.cancel();
        }
        state.listeners = kept;
        for r in &mut state.listeners {
            if let Some(lc) = config
                .listeners
                .iter()
                .find(|lc| same_socket(&r.config, lc))
            {
                if r.config != *lc {
                    summary.listeners_tls_changed.push(lc.name.clone());
                    self.swap_tls(r, lc);
                }
            }
        }
        for (lc, l) in bound {
            summary.listeners_added.push(lc.name.clone());
            let running = self.spawn_listener(lc, l);
            state.listeners.push(running);
        }
        self.publish_listeners(&state);

        // 5. Pool tasks: keep those whose pool instance survived.
        let mut tasks = std::mem::take(&mut state.pool_tasks);
        for pool in &current.pools {
            let name = pool.name().to_string();
            match tasks.remove(&name) {
                Some(t) if Arc::ptr_eq(&t.pool, pool) => {
                    state.pool_tasks.insert(name, t);
                }
                other => {
                    if let Some(t) = other {
                        t.cancel.cancel();
                    }
                    let t = self.spawn_pool_tasks(pool, &current.config);
                    state.pool_tasks.insert(name, t);
                }
            }
        }
        for (_, t) in tasks {
            t.cancel.cancel();
        }
        Ok(summary)
    }
}

/// A running listener is kept (socket and connections) when name and bind
/// address are unchanged; its other settings (TLS) are swapped in place.
fn same_socket(running: &ListenerConfig, wanted: &ListenerConfig) -> bool {
    running.name == wanted.name && running.bind == wanted.bind
}

fn diff(old: &Snapshot, new: &Snapshot) -> ReloadSummary {
    let mut s = ReloadSummary::default();
    let endpoints = |p: &Pool| -> BTreeSet<SocketAddr> {
        p.backends().backends().iter().map(|b| b.addr()).collect()
    };
    for np in &new.pools {
        match old.pools.iter().find(|op| op.name() == np.name()) {
            None => {
                s.pools_added.push(np.name().to_string());
                for a in endpoints(np) {
                    s.endpoints_added.push(format!("{}/{a}", np.name()));
                }
            }
            Some(op) if Arc::ptr_eq(op, np) => {}
            Some(op) => {
                s.pools_changed.push(np.name().to_string());
                let (before, after) = (endpoints(op), endpoints(np));
                for a in after.difference(&before) {
                    s.endpoints_added.push(format!("{}/{a}", np.name()));
                }
                for a in before.difference(&after) {
                    s.endpoints_removed.push(format!("{}/{a}", np.name()));
                }
            }
        }
    }
    for op in &old.pools {
        if !new.pools.iter().any(|np| np.name() == op.name()) {
            s.pools_removed.push(op.name().to_string());
            for a in endpoints(op) {
                s.endpoints_removed.push(format!("{}/{a}", op.name()));
            }
        }
    }
    s
}

/// A request to reload, with a channel for the answer.
pub(crate) type ReloadRequest = oneshot::Sender<Result<ReloadSummary, ReloadError>>;

/// Handle the admin API uses to ask for a reload and wait for its result.
#[derive(Clone, Debug)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadRequest>,
}

impl ReloadHandle {
    /// Asks the reloader to reread the config file and waits for the result.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .await
            .map_err(|_| ReloadError::ShuttingDown)?;
        rx.await.map_err(|_| ReloadError::ShuttingDown)?
    }
}
