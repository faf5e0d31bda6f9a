//! The `weir` command: parse arguments, set up logging and the runtime, and
//! hand over to the library. Errors become a message and exit code 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// mimalloc instead of glibc's malloc. A proxy allocates and frees a few
/// short-lived buffers per request while thousands of small connection
/// tasks stay alive; glibc mixes both on the same heap pages and keeps the
/// holes a burst leaves (an idle keep-alive connection then costs several
/// KiB of retained heap). mimalloc keeps each size class on its own pages,
/// returns pages that empty out to the OS shortly after, and is faster on
/// the malloc/free pairs of the request path.
///
/// Built without transparent huge pages (`no_thp`): with THP on (`madvise`,
/// Debian's default), mimalloc asks for huge pages on its arenas, so a
/// touched byte can commit 2 MiB. Without, the resident set of an idle weir
/// is ~4 MiB smaller (16.2 → 12.3 MiB) and grows with load in 4 KiB steps,
/// not 2 MiB ones; the side-by-side runs in `benches/README.md` show no
/// loss of requests per CPU-second.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// weir: a Layer-7 load-balancing reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    global: GlobalArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve traffic with a config file (the default command).
    Run(RunArgs),
    /// Validate a config file and print a one-line summary.
    Check(CheckArgs),
    /// Start three local demo backends with weir in front of them.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Config file.
    #[arg(short, long, value_name = "PATH", env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Config file.
    #[arg(short, long, value_name = "PATH")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Address for the demo listener; if it is taken, an ephemeral port is used.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address for the admin listener; if it is taken, an ephemeral port is used.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
}

#[derive(Debug, Args)]
struct GlobalArgs {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (e.g. `info`, `weir=debug`); overrides RUST_LOG.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long, global = true, env = "WEIR_THREADS")]
    threads: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.global);
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Run(cli.run));
    if let Command::Check(args) = &command {
        let config = weir::Config::load(&args.config)?;
        for w in config.warnings() {
            println!("{}: warning: {w}", args.config.display());
        }
        println!("{}: ok: {}", args.config.display(), config.summary());
        return Ok(ExitCode::SUCCESS);
    }
    // One thread: a current-thread runtime, which skips the work-stealing
    // machinery (run queues shared between workers, cross-thread wake-ups)
    // that a single worker never needs. More: the multi-thread scheduler.
    let mut rt = match cli.global.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all().on_thread_park(heap::on_park);
    let rt = rt.build().context("cannot start the tokio runtime")?;
    rt.block_on(async move {
        tokio::spawn(heap::tick());
        match command {
            Command::Run(args) => {
                let path = args
                    .config
                    .context("no config file: use `weir run --config PATH` (or `weir demo`)")?;
                let weir = weir::Weir::start_from_file(&path).await?;
                serve_until_signal(weir).await
            }
            Command::Demo(args) => demo(args).await,
            Command::Check(_) => Ok(ExitCode::SUCCESS),
        }
    })
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let mut backends = Vec::new();
    for name in ["backend-1", "backend-2", "backend-3"] {
        backends.push(weir::demo::spawn_backend(name).await?);
    }
    let mut listen = args.listen;
    let mut admin = args.admin;
    let weir = loop {
        match weir::Weir::start(weir::demo::config(listen, admin, &backends)?).await {
            Ok(w) => break w,
            Err(weir::StartError::Bind(e))
                if e.error.kind() == std::io::ErrorKind::AddrInUse && e.addr.port() != 0 =>
            {
                let addr = e.addr;
                tracing::warn!(%addr, "address in use; using an ephemeral port");
                if addr == listen {
                    listen.set_port(0);
                } else {
                    admin.set_port(0);
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let url = weir
        .listener_addr("demo")
        .map(|a| format!("http://{a}/"))
        .unwrap_or_default();
    println!("weir demo: 3 backends behind {url}");
    println!("  try:     curl -s {url}hello   (repeat it: the backends take turns)");
    println!("  metrics: curl -s http://{}/metrics", weir.admin_addr());
    println!("  status:  curl -s http://{}/status", weir.admin_addr());
    println!("  stop:    Ctrl-C");
    serve_until_signal(weir).await
}

async fn serve_until_signal(weir: weir::Weir) -> anyhow::Result<ExitCode> {
    wait_for_shutdown_signal().await?;
    tracing::info!("shutting down");
    let report = weir.shutdown().await;
    tracing::info!(drained = report.drained, "stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await.context("cannot watch Ctrl-C")
}

fn init_tracing(args: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = match &args.log_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Memory a burst freed goes back to the OS once a worker has nothing to
/// do, as Envoy's `shrink_heap` overload action does for tcmalloc.
///
/// mimalloc returns empty pages to the OS only after a delay, and only when
/// it runs again: a proxy that serves a burst of requests and then holds
/// its connections idle would keep the burst's memory. So a worker that
/// parks (its run queue is empty) asks mimalloc to collect, at most once a
/// second; a once-a-second tick makes sure an idle worker parks again after
/// the last burst. Under load this is one collection per second per worker,
/// too rare to show in throughput.
mod heap {
    use std::cell::Cell;
    use std::time::Duration;

    use tokio::time::Instant;

    /// How often a worker may collect.
    const EVERY: Duration = Duration::from_secs(1);

    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }

    /// The runtime's park hook.
    pub fn on_park() {
        let now = Instant::now();
        let due = LAST.get().is_none_or(|t| now.duration_since(t) >= EVERY);
        if due {
            LAST.set(Some(now));
            collect();
        }
    }

    /// Wakes a worker once a second, so it parks (and may collect) even
    /// when nothing else happens.
    pub async fn tick() {
        loop {
            tokio::time::sleep(EVERY).await;
        }
    }

    #[allow(unsafe_code)]
    fn collect() {
        // SAFETY: `mi_collect` takes no pointers and may be called from any
        // thread at any time (mimalloc.h: "Eagerly free memory"); `force`
        // also returns freed memory to the OS without waiting for the
        // purge delay.
        unsafe { libmimalloc_sys::mi_collect(true) }
    }
}
