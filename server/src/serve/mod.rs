//! `tessera serve`: the network server.
//!
//! Concurrency model: a tokio multi-threaded runtime with one worker per
//! core. Each connection is a task ([`conn`]); reads execute on the worker
//! that owns the connection, writes (which may wait for fsync) on threads a
//! few nice levels below ([`bulk`]), registry applies on tokio's blocking
//! pool. Thousands of idle connections cost a task and two small buffers
//! each, not a thread. `docs/design.md` gives the
//! measurements behind the choice.
//!
//! Shutdown (SIGTERM or SIGINT): stop accepting; let every connection
//! finish the request it is executing and close; after the grace period
//! abort the rest; then close the engine, which makes the WAL durable and
//! checkpoints the hash index. Exit status 0 when all of that succeeded.

mod auth;
mod bulk;
mod burst;
mod columns;
mod config;
mod conn;
mod export;
mod http;
mod huge_pages;
mod import;
mod metrics;
mod pinning;
mod service;
mod slate;
mod write;

pub use auth::{Auth, Session, LOCAL_IDENTITY};
pub use config::{ConfigFile, DurabilitySetting, ServeConfig, TokenConfig};
pub use metrics::Metrics;
pub use service::Service;
pub use slate::wire_type;

use crate::registry::RegistryStore;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tessera_protocol::{encode_error, ErrorBody, ErrorCode};
use tessera_storage::{Engine, Options};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Connections the kernel may hold completed but not yet accepted (capped
/// by `net.core.somaxconn`): a burst of connects must not overflow it, or
/// the kernel drops SYNs and each dropped client waits a second to retry.
const LISTEN_BACKLOG: u32 = 4096;
/// Descriptors the server needs besides its connections (engine files,
/// the WAL, listeners, the runtime).
const RESERVED_FDS: u64 = 256;
/// Pause after a failed `accept` before the next.
const ACCEPT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
/// Subdirectory of the data directory holding the registry.
pub const REGISTRY_DIR: &str = "registry";
/// Subdirectory of the data directory holding the engine's files.
pub const ENGINE_DIR: &str = "engine";

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
    /// The engine failed to open or close.
    #[error("storage: {0}")]
    Storage(#[from] tessera_storage::Error),
    /// The registry failed to open.
    #[error("registry: {0}")]
    Registry(#[from] crate::registry::StoreError),
    /// A socket or the runtime failed.
    #[error("{what}: {source}")]
    Io {
        /// What the server was doing.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else that stops the server.
    #[error("{0}")]
    Other(String),
}

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) config: ServeConfig,
    pub(crate) service: Service,
    pub(crate) auth: Auth,
    pub(crate) metrics: Metrics,
    pub(crate) log: RateLimitedLog,
    pub(crate) import_slots: std::sync::Arc<import::ImportSlots>,
    /// Workers pipelined bursts may occupy at once.
    pub(crate) bursts: burst::BurstGate,
}

/// Warnings about client mistakes, at most [`LOG_BURST`] per second, so a
/// hostile client cannot flood the log; the rest are counted and reported.
pub(crate) struct RateLimitedLog {
    second: AtomicU64,
    in_second: AtomicU64,
    suppressed: AtomicU64,
    started: Instant,
}

/// Warnings logged per second before suppression.
const LOG_BURST: u64 = 20;

impl RateLimitedLog {
    fn new() -> RateLimitedLog {
        RateLimitedLog {
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// Logs `msg` unless this second's budget is spent.
    pub(crate) fn warn(&self, msg: std::fmt::Arguments<'_>) {
        let now = self.started.elapsed().as_secs();
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.in_second.store(0, Ordering::Relaxed);
            let dropped = self.suppressed.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(dropped, "client warnings suppressed in the last second(s)");
            }
        }
        if self.in_second.fetch_add(1, Ordering::Relaxed) < LOG_BURST {
            tracing::warn!("{msg}");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Opens the data directory and serves until SIGTERM or SIGINT.
pub fn run(config: ServeConfig) -> Result<(), ServeError> {
    config.validate().map_err(ServeError::Config)?;
    if !config.huge_pages {
        if let Err(e) = huge_pages::forgo() {
            tracing::warn!("could not turn transparent huge pages off: {e}");
        }
    }
    raise_fd_limit(config.max_connections);
    let workers = config.workers();
    let shared = Arc::new(open(config, workers)?);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers);
    let pinning = if shared.config.pin_workers {
        pinning::WorkerPinning::new(workers)
    } else {
        None
    };
    if let Some(pinning) = pinning {
        builder.on_thread_park(move || pinning.place_current_worker());
    }
    let runtime = builder
        .enable_all()
        .thread_name("tessera-worker")
        .build()
        .map_err(io_err("starting the runtime"))?;
    let served = runtime.block_on(serve(shared.clone()));
    runtime.shutdown_timeout(shared.config.shutdown_grace);
    served?;
    let shared = Arc::try_unwrap(shared).map_err(|_| {
        ServeError::Other("a request was still running after the shutdown grace period".into())
    })?;
    tracing::info!("closing the engine");
    shared.service.into_engine().close()?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Opens the engine and the registry; `workers` (the runtime's) sizes the
/// burst gate.
fn open(config: ServeConfig, workers: usize) -> Result<Shared, ServeError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(io_err(format!("creating {}", config.data_dir.display())))?;
    let registry = RegistryStore::open(config.data_dir.join(REGISTRY_DIR))?;
    let defaults = Options::default();
    let options = Options {
        durability: config.durability.to_engine(),
        block_cache_bytes: config
            .block_cache_mib
            .map_or(defaults.block_cache_bytes, |m| m << 20),
        memtable_bytes: config
            .memtable_mib
            .map_or(defaults.memtable_bytes, |m| m << 20),
        ingest_run_bytes: config
            .import_sort_mib
            .map_or(defaults.ingest_run_bytes, |m| m << 20),
        ..defaults
    };
    let engine = Engine::open(config.data_dir.join(ENGINE_DIR), options)?;
    let service = Service::new(engine, registry, config.max_frame_bytes)
        .map_err(|e| ServeError::Other(e.message))?;
    Ok(Shared {
        auth: Auth::new(&config.tokens),
        metrics: Metrics::new().map_err(|e| ServeError::Other(format!("metrics: {e}")))?,
        log: RateLimitedLog::new(),
        import_slots: import::ImportSlots::new(config.max_concurrent_imports),
        bursts: burst::BurstGate::new(workers),
        config,
        service,
    })
}

/// Accepts connections until a signal, then drains them.
async fn serve(shared: Arc<Shared>) -> Result<(), ServeError> {
    let config = &shared.config;
    let listener =
        bind(config.listen).map_err(io_err(format!("listening on {}", config.listen)))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if let Some(addr) = config.metrics_listen {
        let http = TcpListener::bind(addr)
            .await
            .map_err(io_err(format!("listening on {addr} for metrics")))?;
        let addr = http
            .local_addr()
            .map_err(io_err("reading the metrics address"))?;
        tasks.spawn(http::serve(http, shared.clone(), stop_rx.clone()));
        println!("tessera metrics on http://{addr}");
    }
    let local = listener
        .local_addr()
        .map_err(io_err("reading the listen address"))?;
    tracing::info!(addr = %local, dev_mode = shared.auth.is_open(), "serving");
    // Tests and scripts wait for this line to know the port is open.
    println!("tessera listening on {local}");
    let limit = Arc::new(Semaphore::new(config.max_connections));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut signal => break,
        };
        let (mut stream, _peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, say: retrying at once would spin.
                shared.log.warn(format_args!("accept failed: {e}"));
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let (shared, stop) = (shared.clone(), stop_rx.clone());
                shared.metrics.connection_opened();
                tasks.spawn(async move {
                    conn::serve(stream, shared.clone(), stop).await;
                    shared.metrics.connection_closed();
                    drop(permit);
                });
            }
            Err(_) => {
                shared.metrics.connection_refused();
                tokio::spawn(async move {
                    let mut frame = Vec::new();
                    let err = ErrorBody {
                        code: ErrorCode::Unavailable,
                        message: "the server is at its connection limit".into(),
                    };
                    encode_error(0, 0, &err, &mut frame);
                    let _ = stream.write_all(&frame).await;
                });
            }
        }
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    tracing::info!("shutting down: no longer accepting connections");
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("aborting connections still busy after the grace period");
        tasks.shutdown().await;
    }
    Ok(())
}

/// Listens on `addr` with a backlog of [`LISTEN_BACKLOG`] (the standard
/// library's `bind` asks for 128).
fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Raises the soft limit on open descriptors to the hard limit, so that
/// the connection limit, not `EMFILE`, is what refuses connections; warns
/// when even the hard limit leaves no room for `max_connections`.
fn raise_fd_limit(max_connections: usize) {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            "reading the descriptor limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(
                "raising the descriptor limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let needed = (max_connections as u64).saturating_add(RESERVED_FDS);
    if limit.rlim_cur < needed {
        tracing::warn!(
            limit = limit.rlim_cur,
            max_connections,
            "the descriptor limit is below max_connections plus {RESERVED_FDS}: \
             accepts will fail with EMFILE before the connection limit refuses them"
        );
    } else {
        tracing::debug!(limit = limit.rlim_cur, "descriptor limit");
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers, only an explicit stop would end the
        // server: fall back to ctrl-c.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
