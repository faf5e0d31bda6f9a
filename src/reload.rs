//! Hot reload: parse → validate → diff → build → one atomic swap.
//!
//! Three triggers feed one reloader task, so reloads never overlap: a file
//! watcher, SIGHUP, and `POST /reload` on the admin listener (which waits for
//! the result). The watcher watches the config file's *directory*, not the
//! file, because editors and deploy tools replace files by rename and
//! Kubernetes swaps a ConfigMap by re-pointing a `..data` symlink; either
//! way the watched inode of the file itself would go stale. Bursts of events
//! are debounced, and a reload whose file content hash equals the running
//! one is skipped, so unrelated files in the directory cost one read
//! (unless the last reload failed: then the next event rereads the file,
//! so restoring the running config clears the failure).
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
//! content hash. The watcher also watches the directory of every such file
//! of the running config, so replacing a certificate on disk reloads. A
//! listener is identified by name and bind address: when only its `tls:`
//! settings or files changed, its socket and open connections stay, and its
//! new rustls config is swapped in for the next handshakes.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

/// Quiet time after the last file event before reloading: editors write in
/// several steps, and a ConfigMap update is several renames.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Spawns the reloader task (file watcher, SIGHUP, API requests) and returns
/// the handle for API requests.
///
/// The watcher and the SIGHUP handler are installed here, before this
/// returns, not when the task first runs: an edit or a SIGHUP that arrives
/// right after startup must not be missed (or, for SIGHUP, kill the process
/// with the default action). The task's first act is to compare the file
/// with the running config (as of now), covering edits made between the
/// startup read and the watch starting.
pub(crate) fn spawn(
    control: Arc<Control>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> ReloadHandle {
    let (tx, rx) = mpsc::channel::<ReloadRequest>(8);
    let (file_tx, file_events) = mpsc::channel::<()>(1);
    let watcher = control
        .path
        .as_deref()
        .and_then(|p| watch(p, file_tx, &control.shared.snapshot().config));
    let hup = hangup_signal();
    // Checked now, with the watcher already in place, so that an edit after
    // this point is seen by the watcher and one before it by this check.
    let changed_at_start = file_changed(&control);
    tasks.spawn(run(
        control,
        rx,
        file_events,
        watcher,
        hup,
        changed_at_start,
        cancel,
    ));
    ReloadHandle { tx }
}

async fn run(
    control: Arc<Control>,
    mut requests: mpsc::Receiver<ReloadRequest>,
    mut file_events: mpsc::Receiver<()>,
    // Kept alive for as long as this task runs.
    mut watcher: Option<Watch>,
    mut hup: Hangup,
    changed_at_start: bool,
    cancel: CancellationToken,
) {
    // Whether the last reload failed. A failed reload leaves the running
    // config's hash in place, so after a failure the file must be reread
    // on the next event even when it matches the running config again:
    // restoring a deleted file, or undoing a bad edit, is a successful
    // reload and must clear `weir_config_last_reload_success = 0`.
    let mut failed = false;
    if changed_at_start {
        tracing::info!("config file changed during startup; reloading");
        failed = reload(&control, &mut watcher).await.is_err();
    }
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            req = requests.recv() => {
                let Some(reply) = req else { return };
                let result = reload(&control, &mut watcher).await;
                failed = result.is_err();
                let _ = reply.send(result);
            }
            Some(()) = file_events.recv() => {
                // Debounce: wait until events stop for DEBOUNCE.
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                        Some(()) = file_events.recv() => {}
                    }
                }
                if failed || file_changed(&control) {
                    tracing::info!("config file changed; reloading");
                    failed = reload(&control, &mut watcher).await.is_err();
                }
            }
            _ = recv_signal(&mut hup) => {
                tracing::info!("SIGHUP; reloading");
                failed = reload(&control, &mut watcher).await.is_err();
            }
        }
    }
}

/// Reloads the file, then points the watcher at the directories of the
/// (possibly new) running config's TLS files.
async fn reload(
    control: &Control,
    watcher: &mut Option<Watch>,
) -> Result<ReloadSummary, ReloadError> {
    let result = control.reload_file().await;
    if let Some(w) = watcher {
        w.sync(&control.shared.snapshot().config);
    }
    result
}

/// Whether the file, or a certificate, key or CA file it names, differs
/// from the running config (the filter for directory events about other
/// files). The config is loaded and validated to see its TLS files, and the
/// full content hash is compared. A config that does not load counts as
/// changed, so the reload reports the error.
fn file_changed(control: &Control) -> bool {
    let Some(path) = control.path.as_deref() else {
        return false;
    };
    match Config::load(path) {
        Ok(config) => config.hash != control.shared.snapshot().config.hash,
        Err(_) => true,
    }
}

/// The file watcher and the directories it watches: the config file's, and
/// those of every TLS file of the running config.
struct Watch {
    watcher: notify::RecommendedWatcher,
    config_dir: PathBuf,
    dirs: BTreeSet<PathBuf>,
}

impl Watch {
    /// Watches the directories `config` needs and stops watching the others
    /// (the config file's own directory always stays).
    fn sync(&mut self, config: &Config) {
        use notify::Watcher as _;
        let mut wanted: BTreeSet<PathBuf> = config
            .tls_files()
            .into_iter()
            .map(|f| match f.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        wanted.insert(self.config_dir.clone());
        for gone in self.dirs.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut watching = BTreeSet::new();
        for dir in wanted {
            if self.dirs.contains(&dir) {
                watching.insert(dir);
                continue;
            }
            match self
                .watcher
                .watch(&dir, notify::RecursiveMode::NonRecursive)
            {
                Ok(()) => {
                    watching.insert(dir);
                }
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    error = %e,
                    "cannot watch a certificate directory; reload with SIGHUP or POST /reload \
                     after replacing certificates"
                ),
            }
        }
        self.dirs = watching;
    }
}

fn watch(path: &Path, tx: mpsc::Sender<()>, config: &Config) -> Option<Watch> {
    use notify::Watcher as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            // A full channel already holds a pending wake-up.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP or POST /reload");
        return None;
    }
    let mut w = Watch {
        watcher,
        dirs: BTreeSet::from([dir.clone()]),
        config_dir: dir,
    };
    w.sync(config);
    Some(w)
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_signal(s: &mut Hangup) {
    match s {
        Some(sig) => {
            if sig.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_signal(_: &mut Hangup) {
    std::future::pending().await
}
