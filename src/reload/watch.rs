//! The reloader task and its triggers: the file watcher, SIGHUP, and
//! `POST /reload` requests, all served by one task so reloads never overlap.
//!
//! # What the watcher reacts to
//!
//! The watched *files* are the config file and every certificate, key and
//! CA file, and every middleware file (htpasswd, secrets), of the running
//! config ([`Config::watched_files`]). The watcher
//! watches the directory each of them is named in (not the file's inode:
//! editors replace files by rename, and Kubernetes swaps a ConfigMap by
//! re-pointing a `..data` symlink), and from those directories' events it
//! keeps only the ones that can change what a watched file reads as:
//!
//! - **kinds**: creations, modifications (data, metadata, renames),
//!   removals, the end of a write (close after writing), and "events were
//!   lost, rescan" notices. Opens, reads and closes without writing are
//!   ignored, so weir's own reads of its files never trigger anything.
//! - **names**: an event counts when one of its paths is a *name* of a
//!   watched file, or a directory on the way to one. A file's names are its
//!   path as configured (made absolute against the working directory, as
//!   the watch backend reports it), every symlink met while resolving that
//!   path, each path that resolution step leads to, and the final target.
//!   For a Kubernetes mount, `config.yaml -> ..data/config.yaml` and
//!   `..data -> ..2024_01_01_v1`, the names include `config.yaml`, `..data`
//!   and `..2024_01_01_v1/config.yaml`; re-pointing `..data` or removing
//!   the old `..2024_01_01_v1` directory therefore counts, while a log file
//!   written next to the config does not. Names are compared by path
//!   components (so `dir/./a` is `dir/a`), without touching the disk, and
//!   recomputed whenever the events settle and after every reload.
//!
//! Only the named directories are watched: a symlink to a file in another
//! directory is followed on reload, but an in-place edit of its target
//! there is not seen (reload with SIGHUP or `POST /reload`).
//!
//! # When a reload starts
//!
//! Relevant events are debounced ([`Debounce`]): the files are reread
//! [`DEBOUNCE`] after the last relevant event, because editors write in
//! several steps and a ConfigMap update is several renames, but never later
//! than [`MAX_DELAY`] after the first, so a file rewritten without pause
//! still reloads about every `MAX_DELAY`. Irrelevant events do not reach the
//! debounce at all. When the events settle, the file is loaded and its
//! content hash compared with the running config's; only a difference
//! reloads (so a write of the same bytes is silent).
//!
//! A file that fails to load is reported once, by one failed reload, and is
//! not retried until a relevant event arrives again. After a failure the
//! next settled event reloads without the hash check, so restoring the
//! running content is a successful reload that clears the failure.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode, EventKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Control, ReloadError, ReloadHandle, ReloadRequest, ReloadSummary};
use crate::config::Config;

/// Quiet time after the last relevant event before the files are reread.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Longest wait from the first relevant event of a burst to the reread,
/// however long the burst goes on: four windows, which lets a burst of a
/// few separate writes (a ConfigMap swap, an editor's save) settle while a
/// file rewritten every few milliseconds still reloads within a second.
const MAX_DELAY: Duration = DEBOUNCE.saturating_mul(4);

/// Most symlinks followed when resolving a watched file's names (Linux's
/// own limit for one path lookup).
const MAX_LINKS: usize = 40;

// ---- pure: which events matter ----

/// The names of the watched files (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Watched {
    names: BTreeSet<PathBuf>,
}

impl Watched {
    /// A set of absolute names.
    fn new(names: impl IntoIterator<Item = PathBuf>) -> Watched {
        Watched {
            names: names.into_iter().collect(),
        }
    }

    /// Whether `event` can change what a watched file reads as.
    fn is_relevant(&self, event: &notify::Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        changes_content(&event.kind) && event.paths.iter().any(|p| self.matches(p))
    }

    /// Whether `path` is a watched name or a directory on the way to one.
    fn matches(&self, path: &Path) -> bool {
        path.components().next().is_some() && self.names.iter().any(|n| n.starts_with(path))
    }

    /// Whether `self` has a name `before` did not have.
    fn gained_since(&self, before: &Watched) -> bool {
        !self.names.is_subset(&before.names)
    }
}

/// Whether an event of this kind can change a file's content: everything
/// but opens, reads and closes without writing. A close after writing
/// counts, as the last event of a write.
fn changes_content(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

// ---- pure: when to reload ----

/// The reload deadline of a burst of relevant events: [`DEBOUNCE`] after
/// the last event, but at most [`MAX_DELAY`] after the first.
#[derive(Debug)]
struct Debounce {
    window: Duration,
    max_delay: Duration,
    /// First and last event of the pending burst.
    pending: Option<(Instant, Instant)>,
}

impl Debounce {
    fn new(window: Duration, max_delay: Duration) -> Debounce {
        Debounce {
            window,
            max_delay,
            pending: None,
        }
    }

    /// Records a relevant event at `now`.
    fn event(&mut self, now: Instant) {
        let first = self.pending.map_or(now, |(first, _)| first);
        self.pending = Some((first, now));
    }

    /// When the files should be reread; `None` with nothing pending.
    fn deadline(&self) -> Option<Instant> {
        let (first, last) = self.pending?;
        Some((last + self.window).min(first + self.max_delay))
    }

    /// Ends the pending burst (the reread is starting); later events start
    /// a new one.
    fn clear(&mut self) {
        self.pending = None;
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

// ---- IO: names on disk, the watcher ----

/// `path` made absolute against the working directory, as the watch
/// backend reports event paths; unchanged if there is none.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The names of the file at absolute `path`: the path, and for every
/// symlink met while resolving it, the link and the path it leads to (the
/// last one is the file itself). Only `lstat` and `readlink`: resolving
/// opens nothing.
fn names_of(path: &Path) -> Vec<PathBuf> {
    let mut names = vec![path.to_path_buf()];
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let Some((link, rest)) = first_symlink(&current) else {
            break;
        };
        let Ok(target) = std::fs::read_link(&link) else {
            break;
        };
        // A relative target is relative to the link's directory; an
        // absolute one replaces it (`join`).
        let mut next = link.parent().unwrap_or(Path::new("/")).join(target);
        if !rest.as_os_str().is_empty() {
            next.push(rest);
        }
        names.push(link);
        names.push(next.clone());
        current = next;
    }
    names
}

/// The first prefix of `path` that is a symlink, and the rest of the path
/// after it.
fn first_symlink(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut prefix = PathBuf::new();
    let mut components = path.components();
    while let Some(c) = components.next() {
        prefix.push(c);
        let is_link = matches!(c, Component::Normal(_))
            && std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink());
        if is_link {
            return Some((prefix, components.as_path().to_path_buf()));
        }
    }
    None
}

/// The files to watch: the config file (absolute) and every TLS file of
/// `config`.
fn watched_files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    files.extend(config.watched_files().into_iter().map(absolute));
    files
}

/// Forwards a relevant event as a wake-up of the reloader task.
fn forward(watched: &Watched, tx: &mpsc::Sender<()>, event: notify::Result<notify::Event>) {
    match event {
        // A full channel already holds a pending wake-up.
        Ok(e) if watched.is_relevant(&e) => {
            let _ = tx.try_send(());
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "file watcher error"),
    }
}

/// The file watcher, the directories it watches, and the names it
/// filters events by (shared with its event callback).
struct Watch {
    watcher: notify::RecommendedWatcher,
    config_path: PathBuf,
    dirs: BTreeSet<PathBuf>,
    watched: Arc<ArcSwap<Watched>>,
}

impl Watch {
    /// Watches the config file's directory and those of `config`'s TLS
    /// files. `None` (with a warning) if the config directory cannot be
    /// watched.
    fn new(path: &Path, tx: mpsc::Sender<()>, config: &Config) -> Option<Watch> {
        use notify::Watcher as _;
        let config_path = absolute(path);
        let watched = Arc::new(ArcSwap::from_pointee(Watched::default()));
        let filter = Arc::clone(&watched);
        let handler = move |event| forward(&filter.load(), &tx, event);
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP or POST /reload");
                return None;
            }
        };
        let dir = parent(&config_path);
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP or POST /reload");
            return None;
        }
        let mut w = Watch {
            watcher,
            config_path,
            dirs: BTreeSet::from([dir]),
            watched,
        };
        w.sync(config);
        Some(w)
    }

    /// Recomputes the names from the disk and `config` (the running
    /// config), watches the directories they need and stops watching the
    /// others (the config file's own directory always stays). Returns
    /// whether a name was added.
    fn sync(&mut self, config: &Config) -> bool {
        use notify::Watcher as _;
        let files = watched_files(&self.config_path, config);
        let watched = Watched::new(files.iter().flat_map(|f| names_of(f)));
        let gained = watched.gained_since(&self.watched.load());
        self.watched.store(Arc::new(watched));

        let wanted: BTreeSet<PathBuf> = files.iter().map(|f| parent(f)).collect();
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
        gained
    }
}

/// The directory an absolute file path is named in.
fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("/"),
    }
}

// ---- the task ----

/// Spawns the reloader task (file watcher, SIGHUP, API requests) and returns
/// the handle for API requests.
///
/// The watcher and the SIGHUP handler are installed here, before this
/// returns, not when the task first runs: an edit or a SIGHUP that arrives
/// right after startup must not be missed (or, for SIGHUP, kill the process
/// with the default action). The task's first act is to compare the file
/// with the running config (as of now), covering edits made between the
/// startup read and the watch starting. That check compares bytes and
/// parses nothing, so startup loads and validates the config once.
pub(crate) fn spawn(
    control: Arc<Control>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> ReloadHandle {
    let (tx, requests) = mpsc::channel::<ReloadRequest>(8);
    let (file_tx, file_events) = mpsc::channel::<()>(1);
    let watcher = control
        .path
        .as_deref()
        .and_then(|p| Watch::new(p, file_tx, &control.shared.snapshot().config));
    let hup = hangup_signal();
    // Checked now, with the watcher already in place, so that an edit after
    // this point is seen by the watcher and one before it by this check.
    let changed_at_start = file_changed(&control);
    let reloader = Reloader {
        control,
        watcher,
        failed: false,
        debounce: Debounce::new(DEBOUNCE, MAX_DELAY),
    };
    tasks.spawn(reloader.run(requests, file_events, hup, changed_at_start, cancel));
    ReloadHandle { tx }
}

/// The reloader task's state.
struct Reloader {
    control: Arc<Control>,
    /// Kept alive for as long as the task runs.
    watcher: Option<Watch>,
    /// Whether the last reload failed. A failed reload leaves the running
    /// config's hash in place, so after a failure the next settled event
    /// rereads the file even when it matches the running config again:
    /// restoring a deleted file, or undoing a bad edit, is a successful
    /// reload and must clear `weir_config_last_reload_success = 0`.
    failed: bool,
    debounce: Debounce,
}

impl Reloader {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<ReloadRequest>,
        mut file_events: mpsc::Receiver<()>,
        mut hup: Hangup,
        changed_at_start: bool,
        cancel: CancellationToken,
    ) {
        if changed_at_start {
            tracing::info!("config file changed during startup; reloading");
            let _ = self.reload().await;
        }
        loop {
            let deadline = self.debounce.deadline();
            tokio::select! {
                _ = cancel.cancelled() => return,
                req = requests.recv() => {
                    let Some(reply) = req else { return };
                    let _ = reply.send(self.reload().await);
                }
                Some(()) = file_events.recv() => self.debounce.event(Instant::now()),
                () = sleep_until(deadline) => self.files_settled().await,
                _ = recv_signal(&mut hup) => {
                    tracing::info!("SIGHUP; reloading");
                    let _ = self.reload().await;
                }
            }
        }
    }

    /// The debounce expired: reload if the files differ from the running
    /// config (or the last reload failed). The file is loaded once.
    async fn files_settled(&mut self) {
        self.debounce.clear();
        // Symlinks may have been re-pointed (a ConfigMap swap): the names
        // are brought up to date before the files are read, so a change
        // after this read is seen by name.
        if let Some(w) = &mut self.watcher {
            w.sync(&self.control.shared.snapshot().config);
        }
        if let Some(result) = self.control.reload_file_if_changed(self.failed).await {
            self.failed = result.is_err();
            self.resync();
        }
    }

    /// Reloads the file, then points the watcher at the (possibly new)
    /// running config's files.
    async fn reload(&mut self) -> Result<ReloadSummary, ReloadError> {
        let result = self.control.reload_file().await;
        self.failed = result.is_err();
        self.resync();
        result
    }

    /// Watches the running config's files after a reload. A newly watched
    /// file may have changed between the reload's read and its watch: its
    /// bytes are compared (nothing parsed) and a difference counts as an
    /// event. Not after a failure, which would be retried and reported
    /// again.
    fn resync(&mut self) {
        let Some(w) = &mut self.watcher else { return };
        let running = self.control.shared.snapshot_full();
        let gained = w.sync(&running.config);
        let path = self.control.path.as_deref();
        if gained && !self.failed && path.is_some_and(|p| !running.config.matches_files(p)) {
            self.debounce.event(Instant::now());
        }
    }
}

/// Whether the file, or a certificate, key or CA file it names, changed
/// since the running config read them: their bytes are hashed and
/// compared, nothing is parsed. A file that cannot be read counts as
/// changed, so the reload reports the error.
fn file_changed(control: &Control) -> bool {
    let Some(path) = control.path.as_deref() else {
        return false;
    };
    !control.shared.snapshot().config.matches_files(path)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use notify::event::{CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode};

    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        paths.iter().fold(notify::Event::new(kind), |e, p| {
            e.add_path(PathBuf::from(p))
        })
    }

    /// `/etc/weir/config.yaml -> ..data/config.yaml`, `..data -> ..v1`, as
    /// `names_of` resolves them, and a certificate in `/etc/weir/certs`.
    fn kubernetes() -> Watched {
        Watched::new(
            [
                "/etc/weir/config.yaml",
                "/etc/weir/..data/config.yaml",
                "/etc/weir/..data",
                "/etc/weir/..v1/config.yaml",
                "/etc/weir/certs/tls.crt",
            ]
            .map(PathBuf::from),
        )
    }

    const MODIFY_DATA: EventKind = EventKind::Modify(ModifyKind::Data(DataChange::Any));

    #[test]
    fn opens_reads_and_closes_without_writing_are_ignored() {
        let w = kubernetes();
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Open(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Any),
        ] {
            for path in ["/etc/weir/config.yaml", "/etc/weir/certs/tls.crt"] {
                assert!(!w.is_relevant(&event(kind, &[path])), "{kind:?} {path}");
            }
        }
    }

    #[test]
    fn every_change_to_a_watched_name_counts() {
        let w = kubernetes();
        for kind in [
            EventKind::Create(CreateKind::File),
            MODIFY_DATA,
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Remove(RemoveKind::File),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
            EventKind::Other,
        ] {
            for path in ["/etc/weir/config.yaml", "/etc/weir/certs/tls.crt"] {
                assert!(w.is_relevant(&event(kind, &[path])), "{kind:?} {path}");
            }
        }
        // An editor's save: a temporary file renamed over the config.
        let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let save = event(
            both,
            &["/etc/weir/.config.yaml.swp", "/etc/weir/config.yaml"],
        );
        assert!(w.is_relevant(&save));
    }

    #[test]
    fn other_files_in_a_watched_directory_are_ignored() {
        let w = kubernetes();
        for path in [
            "/etc/weir/app.log",
            "/etc/weir/.config.yaml.swp",
            "/etc/weir/config.yaml.bak",
            "/etc/weir/certs/tls.key.old",
            "/etc/weir/..v1/other.yaml",
        ] {
            for kind in [EventKind::Create(CreateKind::File), MODIFY_DATA] {
                assert!(!w.is_relevant(&event(kind, &[path])), "{kind:?} {path}");
            }
        }
    }

    #[test]
    fn a_configmap_swap_counts_by_its_symlink_and_old_directory() {
        let w = kubernetes();
        let rename = |mode| EventKind::Modify(ModifyKind::Name(mode));
        // The new version directory and the temporary link are not (yet)
        // names of anything.
        assert!(!w.is_relevant(&event(
            EventKind::Create(CreateKind::Folder),
            &["/etc/weir/..v2"]
        )));
        assert!(!w.is_relevant(&event(
            EventKind::Create(CreateKind::File),
            &["/etc/weir/..data_tmp"]
        )));
        assert!(!w.is_relevant(&event(rename(RenameMode::From), &["/etc/weir/..data_tmp"])));
        // `..data_tmp` renamed over `..data`, and the old version removed.
        assert!(w.is_relevant(&event(rename(RenameMode::To), &["/etc/weir/..data"])));
        assert!(w.is_relevant(&event(
            rename(RenameMode::Both),
            &["/etc/weir/..data_tmp", "/etc/weir/..data"]
        )));
        assert!(w.is_relevant(&event(
            EventKind::Remove(RemoveKind::Folder),
            &["/etc/weir/..v1"]
        )));
        // The watched directory itself going away.
        assert!(w.is_relevant(&event(
            EventKind::Remove(RemoveKind::Folder),
            &["/etc/weir/certs"]
        )));
    }

    #[test]
    fn names_compare_by_components_and_rescans_always_count() {
        let w = Watched::new([PathBuf::from("/srv/./weir/config.yaml")]);
        assert!(w.is_relevant(&event(MODIFY_DATA, &["/srv/weir/config.yaml"])));
        assert!(!w.is_relevant(&event(MODIFY_DATA, &["/srv/weir/config.yaml2"])));
        assert!(!w.is_relevant(&event(MODIFY_DATA, &[""])));
        assert!(!w.is_relevant(&event(MODIFY_DATA, &[])));
        let rescan = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(w.is_relevant(&rescan));
        assert!(Watched::default().is_relevant(&rescan));
    }

    #[test]
    fn gained_names() {
        let one = Watched::new([PathBuf::from("/a")]);
        let two = Watched::new([PathBuf::from("/a"), PathBuf::from("/b")]);
        assert!(two.gained_since(&one));
        assert!(!one.gained_since(&two));
        assert!(!one.gained_since(&one));
    }

    #[cfg(unix)]
    #[test]
    fn names_follow_symlinks_of_a_kubernetes_layout() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..v1")).unwrap();
        std::fs::write(root.join("..v1/config.yaml"), "x").unwrap();
        symlink("..v1", root.join("..data")).unwrap();
        symlink("..data/config.yaml", root.join("config.yaml")).unwrap();
        // A link to another directory, by absolute path.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("real.yaml"), "y").unwrap();
        symlink(elsewhere.path().join("real.yaml"), root.join("linked.yaml")).unwrap();
        std::fs::write(root.join("plain.yaml"), "z").unwrap();

        let names = Watched::new(names_of(&root.join("config.yaml")));
        for name in ["config.yaml", "..data", "..v1/config.yaml"] {
            assert!(names.matches(&root.join(name)), "{name}: {names:?}");
        }
        assert!(!names.matches(&root.join("..data_tmp")));
        let linked = names_of(&root.join("linked.yaml"));
        assert!(
            linked.contains(&elsewhere.path().join("real.yaml")),
            "{linked:?}"
        );
        // The temporary directories may themselves sit behind a symlink
        // (`/tmp` on some systems): only the file's own name is certain.
        let plain = names_of(&root.join("plain.yaml"));
        assert_eq!(plain.first(), Some(&root.join("plain.yaml")));
        assert!(!plain.contains(&root.join("config.yaml")));
        // A loop ends at the link limit instead of hanging.
        symlink("loop_b", root.join("loop_a")).unwrap();
        symlink("loop_a", root.join("loop_b")).unwrap();
        assert!(names_of(&root.join("loop_a")).len() <= 1 + 2 * MAX_LINKS);
    }

    #[test]
    fn forward_wakes_the_task_for_relevant_events_only() {
        let w = kubernetes();
        let (tx, mut rx) = mpsc::channel(1);
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        forward(&w, &tx, Ok(event(open, &["/etc/weir/config.yaml"])));
        forward(&w, &tx, Ok(event(MODIFY_DATA, &["/etc/weir/app.log"])));
        forward(&w, &tx, Err(notify::Error::generic("backend hiccup")));
        assert!(rx.try_recv().is_err());
        forward(&w, &tx, Ok(event(MODIFY_DATA, &["/etc/weir/config.yaml"])));
        // A second wake-up while one is pending is absorbed.
        forward(&w, &tx, Ok(event(MODIFY_DATA, &["/etc/weir/config.yaml"])));
        assert_eq!(rx.try_recv(), Ok(()));
        assert!(rx.try_recv().is_err());
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_one_window_after_the_last_event_within_the_max_delay() {
        let mut d = Debounce::new(DEBOUNCE, MAX_DELAY);
        assert_eq!(d.deadline(), None);
        let t0 = Instant::now();
        d.event(t0);
        assert_eq!(d.deadline(), Some(t0 + DEBOUNCE));
        tokio::time::advance(100 * MS).await;
        d.event(Instant::now());
        assert_eq!(d.deadline(), Some(t0 + 100 * MS + DEBOUNCE));
        // Events every 20 ms: the deadline stops moving at the max delay.
        for _ in 0..100 {
            tokio::time::advance(20 * MS).await;
            d.event(Instant::now());
            assert!(d.deadline().unwrap() <= t0 + MAX_DELAY);
        }
        assert_eq!(d.deadline(), Some(t0 + MAX_DELAY));
        d.clear();
        assert_eq!(d.deadline(), None);
        let t1 = Instant::now();
        d.event(t1);
        assert_eq!(d.deadline(), Some(t1 + DEBOUNCE));
    }

    /// The reloader's wait, as in `Reloader::run`: wake-ups from `forward`
    /// feed the debounce, and the first expiry ends it. Returns when it
    /// expired, measured from the start.
    async fn first_expiry(
        w: Watched,
        feed: impl Fn(u64) -> Option<notify::Event> + Send + 'static,
    ) -> Duration {
        let (tx, mut rx) = mpsc::channel(1);
        let start = Instant::now();
        // One event source ticking every 10 ms, on a task of its own like
        // the watch backend's thread.
        let source = tokio::spawn(async move {
            for tick in 0.. {
                if let Some(e) = feed(tick) {
                    forward(&w, &tx, Ok(e));
                }
                tokio::time::sleep(10 * MS).await;
            }
        });
        let mut d = Debounce::new(DEBOUNCE, MAX_DELAY);
        let expired = loop {
            let deadline = d.deadline();
            tokio::select! {
                Some(()) = rx.recv() => d.event(Instant::now()),
                () = sleep_until(deadline) => break start.elapsed(),
            }
        };
        source.abort();
        expired
    }

    #[tokio::test(start_paused = true)]
    async fn unrelated_events_never_delay_the_reload() {
        // A log file written every 10 ms; the config written once at 100 ms.
        let expired = first_expiry(kubernetes(), |tick| {
            let path = if tick == 10 {
                "/etc/weir/config.yaml"
            } else {
                "/etc/weir/app.log"
            };
            Some(event(MODIFY_DATA, &[path]))
        })
        .await;
        assert_eq!(expired, 100 * MS + DEBOUNCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_config_rewritten_without_pause_reloads_at_the_max_delay() {
        let expired = first_expiry(kubernetes(), |_| {
            Some(event(MODIFY_DATA, &["/etc/weir/config.yaml"]))
        })
        .await;
        assert_eq!(expired, MAX_DELAY);
    }
}
