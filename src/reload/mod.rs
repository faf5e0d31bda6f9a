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

/// The tokens and trackers every task of a weir instance is tied to.
/// `app` owns the shutdown order over them; the control plane hands child
/// tokens of them to the listeners and pool tasks it starts.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    /// Cancelled first at shutdown: listeners stop accepting.
    pub stop_accepting: CancellationToken,
    /// Then open connections are told to finish gracefully.
    pub drain: CancellationToken,
    /// Last: the reloader, probes, discovery and the admin listener.
    pub background: CancellationToken,
    /// Connection tasks; shutdown waits for them within the grace period.
    pub connections: TaskTracker,
    /// Every other task.
    pub tasks: TaskTracker,
}

/// The control plane's mutable state: listeners and per-pool tasks. Only
/// the reloader and startup touch it, under one async mutex.
pub(crate) struct Control {
    pub(crate) shared: Arc<Shared>,
    pub(crate) path: Option<PathBuf>,
    state: tokio::sync::Mutex<ControlState>,
    life: Lifecycle,
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
    /// A control plane over `shared`, which holds the empty snapshot
    /// ([`Snapshot::empty`]) until the first [`Control::apply`].
    pub(crate) fn new(
        shared: Arc<Shared>,
        path: Option<PathBuf>,
        admin_bind: SocketAddr,
        life: Lifecycle,
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
            life,
            spawner,
        }
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

    fn spawn_listener(&self, config: ListenerConfig, l: Listener) -> RunningListener {
        let stop = self.life.stop_accepting.child_token();
        let drain = self.life.drain.child_token();
        let local_addr = l.local_addr();
        tracing::info!(listener = %config.name, address = %local_addr, "listening");
        let metrics = self.shared.metrics.listener(&config.name);
        let tls: TlsSlot = Arc::new(arc_swap::ArcSwapOption::new(self.tls_runtime(&config)));
        let ctx = server::ListenerCtx {
            shared: Arc::clone(&self.shared),
            metrics,
            tls: Arc::clone(&tls),
            stop: stop.clone(),
            drain: drain.clone(),
            connections: self.life.connections.clone(),
        };
        self.life.tasks.spawn(server::serve(l, ctx));
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
        let cancel = self.life.background.child_token();
        (self.spawner)(pool, config, cancel.clone(), &self.life.tasks);
        PoolTasks {
            pool: Arc::clone(pool),
            cancel,
        }
    }

    /// Reads the config file once and applies it unless it hashes to the
    /// running config (then nothing is logged or counted: the watcher saw
    /// a touch, not a change). `force` applies it anyway, so that after a
    /// failed reload restoring the running content counts as a success.
    pub(crate) async fn reload_file_if_changed(
        &self,
        force: bool,
    ) -> Option<Result<ReloadSummary, ReloadError>> {
        let path = self.path.as_deref()?;
        let loaded = Config::load(path);
        if let Ok(c) = &loaded {
            if !force && c.hash == self.shared.snapshot().config.hash {
                return None;
            }
        }
        Some(self.apply_loaded(loaded).await)
    }

    /// Reads the config file (once) and applies it.
    pub(crate) async fn reload_file(&self) -> Result<ReloadSummary, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        self.apply_loaded(Config::load(path)).await
    }

    /// Applies a validated config: the transaction in the module docs.
    /// Startup is the first apply, from the empty snapshot; every later
    /// one is a reload. Either way the result is logged and counted here.
    pub(crate) async fn apply(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        self.apply_loaded(Ok(config)).await
    }

    async fn apply_loaded(
        &self,
        config: Result<Config, ConfigError>,
    ) -> Result<ReloadSummary, ReloadError> {
        let first = self.shared.snapshot().version == 0;
        let result = match config {
            Ok(config) => self.transaction(config).await,
            Err(e) => Err(e.into()),
        };
        self.record(first, &result);
        result
    }

    /// The one place a load's outcome is reported: log line and metrics.
    /// A failed first load is the caller's to report (startup fails).
    fn record(&self, first: bool, result: &Result<ReloadSummary, ReloadError>) {
        self.shared.metrics.config_loaded(result.is_ok());
        match result {
            Ok(s) if first => {
                let snap = self.shared.snapshot();
                tracing::info!(
                    version = s.version,
                    hash = %s.hash,
                    listeners = snap.config.listeners.len(),
                    routes = snap.config.routes.len(),
                    pools = snap.config.pools.len(),
                    "config loaded"
                );
            }
            Ok(s) if s.changed => tracing::info!(
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
            ),
            Ok(_) => tracing::info!("config reloaded: no change"),
            Err(_) if first => {}
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; the running config keeps serving")
            }
        }
    }

    /// Steps 2-5 of the module docs, under the control-state lock.
    async fn transaction(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let mut state = self.state.lock().await;
        let old = self.shared.snapshot_full();
        if config.admin.bind != state.admin_bind {
            return Err(ReloadError::AdminMoved {
                from: state.admin_bind,
                to: config.admin.bind,
            });
        }
        if old.version > 0 && *old.config == config {
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
        let bound = bind_new(&state.listeners, &config)?;
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
        // 5. Listeners and pool tasks.
        self.replace_listeners(&mut state, &config, bound, &mut summary);
        self.restart_pool_tasks(&mut state);
        Ok(summary)
    }

    /// Stops listeners `config` no longer has, swaps TLS settings of kept
    /// ones, and starts the newly bound ones.
    fn replace_listeners(
        &self,
        state: &mut ControlState,
        config: &Config,
        bound: Vec<(ListenerConfig, Listener)>,
        summary: &mut ReloadSummary,
    ) {
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
            let wanted = config
                .listeners
                .iter()
                .find(|lc| same_socket(&r.config, lc));
            if let Some(lc) = wanted.filter(|lc| r.config != **lc) {
                summary.listeners_tls_changed.push(lc.name.clone());
                self.swap_tls(r, lc);
            }
        }
        for (lc, l) in bound {
            summary.listeners_added.push(lc.name.clone());
            let running = self.spawn_listener(lc, l);
            state.listeners.push(running);
        }
        self.publish_listeners(state);
    }

    /// Keeps the tasks of pool instances that survived the swap, cancels
    /// those of replaced or removed ones, and starts tasks for new ones.
    fn restart_pool_tasks(&self, state: &mut ControlState) {
        let current = self.shared.snapshot_full();
        let mut tasks = std::mem::take(&mut state.pool_tasks);
        for pool in &current.pools {
            let name = pool.name().to_string();
            let t = match tasks.remove(&name) {
                Some(t) if Arc::ptr_eq(&t.pool, pool) => t,
                other => {
                    if let Some(t) = other {
                        t.cancel.cancel();
                    }
                    self.spawn_pool_tasks(pool, &current.config)
                }
            };
            state.pool_tasks.insert(name, t);
        }
        for (_, t) in tasks {
            t.cancel.cancel();
        }
    }
}

/// Binds the listeners of `config` that no running listener already
/// serves. All or nothing: on an error the ones bound so far close.
fn bind_new(
    running: &[RunningListener],
    config: &Config,
) -> Result<Vec<(ListenerConfig, Listener)>, ReloadError> {
    let mut bound = Vec::new();
    for lc in &config.listeners {
        let keep = running
            .iter()
            .any(|r| same_socket(&r.config, lc) && !r.stop.is_cancelled());
        if !keep {
            bound.push((lc.clone(), Listener::bind(&lc.name, lc.bind)?));
        }
    }
    Ok(bound)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::metrics::Metrics;

    /// A config with pools given as `name: [ports]` (endpoints on
    /// 127.0.0.1) and `extra` keys for every pool.
    fn config(pools: &[(&str, &[u16])], extra: &str) -> Arc<Config> {
        let mut yaml = String::from(
            "listeners:\n  - name: main\n    bind: \"127.0.0.1:1\"\nroutes:\n  - pool: a\npools:\n",
        );
        for (name, ports) in pools {
            yaml.push_str(&format!("  - name: {name}\n{extra}    endpoints:\n"));
            for p in *ports {
                yaml.push_str(&format!("      - address: \"127.0.0.1:{p}\"\n"));
            }
        }
        Arc::new(Config::from_yaml(&yaml, "test.yaml").unwrap())
    }

    fn next(old: &Snapshot, config: Arc<Config>, metrics: &Metrics) -> Snapshot {
        Snapshot::build(config, old.version + 1, Some(old), metrics)
    }

    #[test]
    fn the_first_load_adds_every_pool_and_endpoint() {
        let m = Metrics::new().unwrap();
        let empty = Snapshot::empty(&m);
        let first = next(&empty, config(&[("a", &[1, 2]), ("b", &[3])], ""), &m);
        let s = diff(&empty, &first);
        assert_eq!(s.pools_added, ["a", "b"]);
        assert_eq!(
            s.endpoints_added,
            ["a/127.0.0.1:1", "a/127.0.0.1:2", "b/127.0.0.1:3"]
        );
        assert!(s.pools_removed.is_empty() && s.pools_changed.is_empty());
        assert!(s.endpoints_removed.is_empty());
    }

    #[test]
    fn an_unchanged_pool_is_the_same_instance_and_not_reported() {
        let m = Metrics::new().unwrap();
        let old = Snapshot::build(config(&[("a", &[1]), ("b", &[2])], ""), 1, None, &m);
        let new = next(&old, config(&[("a", &[1]), ("b", &[2, 3])], ""), &m);
        assert!(Arc::ptr_eq(&old.pools[0], &new.pools[0]));
        assert!(!Arc::ptr_eq(&old.pools[1], &new.pools[1]));
        let s = diff(&old, &new);
        assert_eq!(s.pools_changed, ["b"]);
        assert_eq!(s.endpoints_added, ["b/127.0.0.1:3"]);
        assert!(s.pools_added.is_empty() && s.pools_removed.is_empty());
    }

    #[test]
    fn changed_pools_report_endpoints_both_ways_and_removed_pools_all_theirs() {
        let m = Metrics::new().unwrap();
        let old = Snapshot::build(
            config(&[("a", &[1, 2]), ("gone", &[7, 8])], ""),
            1,
            None,
            &m,
        );
        let new = next(&old, config(&[("a", &[2, 3]), ("new", &[9])], ""), &m);
        let s = diff(&old, &new);
        assert_eq!(s.pools_added, ["new"]);
        assert_eq!(s.pools_removed, ["gone"]);
        assert_eq!(s.pools_changed, ["a"]);
        assert_eq!(s.endpoints_added, ["a/127.0.0.1:3", "new/127.0.0.1:9"]);
        assert_eq!(
            s.endpoints_removed,
            ["a/127.0.0.1:1", "gone/127.0.0.1:7", "gone/127.0.0.1:8"]
        );
    }

    #[test]
    fn a_settings_change_rebuilds_the_pool_but_keeps_its_endpoints() {
        let m = Metrics::new().unwrap();
        let old = Snapshot::build(config(&[("a", &[1, 2])], ""), 1, None, &m);
        let new = next(
            &old,
            config(&[("a", &[1, 2])], "    balance: least_connections\n"),
            &m,
        );
        let s = diff(&old, &new);
        assert_eq!(s.pools_changed, ["a"]);
        assert!(s.endpoints_added.is_empty() && s.endpoints_removed.is_empty());
        // Same backends (health, load, connections) in the new instance.
        let (before, after) = (old.pools[0].backends(), new.pools[0].backends());
        for (b, a) in before.backends().iter().zip(after.backends()) {
            assert!(Arc::ptr_eq(b, a));
        }
    }

    #[test]
    fn listeners_are_kept_by_name_and_address() {
        let c = config(&[("a", &[1])], "");
        let l = &c.listeners[0];
        let moved = ListenerConfig {
            bind: "127.0.0.1:2".parse().unwrap(),
            ..l.clone()
        };
        let renamed = ListenerConfig {
            name: "other".into(),
            ..l.clone()
        };
        assert!(same_socket(l, &l.clone()));
        assert!(!same_socket(l, &moved));
        assert!(!same_socket(l, &renamed));
    }
}
