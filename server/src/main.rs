//! The `tessera` binary: the server and its command-line client.
//!
//! - `tessera serve`: the network server on a data directory;
//! - `tessera plan | apply | registry history`: the feature registry;
//! - `tessera put | delete | get | history | stats`: data, over the protocol;
//! - `tessera import`: Parquet files into a group, as one import session;
//! - `tessera demo`: an engine walk-through on a local directory;
//! - `tessera check`: recover and verify an engine directory.

mod allocator;
mod cli;
mod demo;

use clap::{Parser, Subcommand};
use cli::ClientArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use tessera_server::serve::{self, ConfigFile, DurabilitySetting, ServeConfig};

#[derive(Parser)]
#[command(
    name = "tessera",
    about = "Tessera: a storage engine and server for ML feature stores",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Show what applying the spec files would change, and every problem.
    Plan {
        #[command(flatten)]
        client: ClientArgs,
        /// Spec files (TOML).
        files: Vec<PathBuf>,
    },
    /// Apply the spec files atomically.
    Apply {
        #[command(flatten)]
        client: ClientArgs,
        /// Spec files (TOML).
        files: Vec<PathBuf>,
    },
    /// The registry's audit trail.
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
    /// Write rows read as JSON lines from FILE (or - for stdin).
    Put {
        #[command(flatten)]
        client: ClientArgs,
        /// The feature group.
        #[arg(long)]
        group: String,
        /// JSON lines: key columns, event_ts and features.
        #[arg(default_value = "-")]
        input: PathBuf,
    },
    /// Delete keys (as of each line's event_ts) read as JSON lines.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The feature group.
        #[arg(long)]
        group: String,
        /// JSON lines: key columns and event_ts.
        #[arg(default_value = "-")]
        input: PathBuf,
    },
    /// Read features of keys: one group's part of a slate, or a whole slate.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::GetArgs,
    },
    /// Every version of one key, newest first.
    History {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::HistoryArgs,
    },
    /// The server's counters.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Bulk-import Parquet files into a feature group, all or nothing.
    Import {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::ImportArgs,
    },
    /// Export a group's rows as of a time, or its history, to Parquet.
    Export {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::ExportArgs,
    },
    /// Join a spine of label rows with features as they were at each row's time.
    PitJoin {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::PitJoinArgs,
    },
    /// Load a small sample into a local engine directory and show its reads.
    Demo {
        /// Engine directory.
        #[arg(long, default_value = "./tessera-demo")]
        data_dir: PathBuf,
    },
    /// Recover an engine directory and verify it.
    Check {
        /// Engine directory (a server's is `<data dir>/engine`).
        #[arg(long, default_value = "./tessera-data/engine")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// List applied changes, newest first.
    History {
        #[command(flatten)]
        client: ClientArgs,
        /// Show at most this many (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

/// `tessera serve` flags; each overrides the config file.
#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the binary protocol.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of /metrics and /healthz.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Serve no HTTP endpoint.
    #[arg(long, conflicts_with = "metrics_listen")]
    no_metrics: bool,
    /// WAL durability: sync, none or interval:<ms>.
    #[arg(long)]
    durability: Option<String>,
    /// Block cache size in MiB.
    #[arg(long)]
    block_cache_mib: Option<usize>,
    /// Most connections served at once.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Largest frame, bytes.
    #[arg(long)]
    max_frame_bytes: Option<usize>,
    /// Async worker threads (default: one per core).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Let workers float across cores instead of pinning one to each.
    #[arg(long)]
    no_pin_workers: bool,
    /// Let the process use transparent huge pages (off by default: they
    /// make memory the allocator freed resident again).
    #[arg(long)]
    huge_pages: bool,
    /// Allow a non-loopback address without tokens.
    #[arg(long)]
    allow_insecure_remote: bool,
}

impl ServeArgs {
    fn config(&self) -> Result<ServeConfig, String> {
        let file = match &self.config {
            Some(path) => ConfigFile::read(path)?,
            None => ConfigFile::default(),
        };
        let mut c = ServeConfig::from_file(file)?;
        if let Some(d) = &self.data_dir {
            c.data_dir = d.clone();
        }
        if let Some(a) = self.listen {
            c.listen = a;
        }
        if let Some(a) = self.metrics_listen {
            c.metrics_listen = Some(a);
        }
        if self.no_metrics {
            c.metrics_listen = None;
        }
        if let Some(d) = &self.durability {
            c.durability = DurabilitySetting::parse(d)?;
        }
        c.block_cache_mib = self.block_cache_mib.or(c.block_cache_mib);
        c.max_connections = self.max_connections.unwrap_or(c.max_connections);
        c.max_frame_bytes = self.max_frame_bytes.unwrap_or(c.max_frame_bytes);
        c.worker_threads = self.worker_threads.or(c.worker_threads);
        c.pin_workers &= !self.no_pin_workers;
        c.huge_pages |= self.huge_pages;
        c.allow_insecure_remote |= self.allow_insecure_remote;
        Ok(c)
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(args) => serve::run(args.config()?).map_err(|e| e.to_string()),
        Command::Plan { client, files } => cli::plan(&client, &files),
        Command::Apply { client, files } => cli::apply(&client, &files),
        Command::Registry {
            command: RegistryCommand::History { client, limit },
        } => cli::registry_history(&client, limit),
        Command::Put {
            client,
            group,
            input,
        } => cli::put(&client, &group, &input),
        Command::Delete {
            client,
            group,
            input,
        } => cli::delete(&client, &group, &input),
        Command::Get { client, args } => cli::get(&client, &args),
        Command::History { client, args } => cli::history(&client, &args),
        Command::Stats { client } => cli::stats(&client),
        Command::Import { client, args } => cli::import(&client, &args),
        Command::Export { client, args } => cli::export(&client, &args),
        Command::PitJoin { client, args } => cli::pit_join(&client, &args),
        Command::Demo { data_dir } => demo::run(&data_dir).map_err(|e| e.to_string()),
        Command::Check { data_dir } => demo::check(&data_dir).map_err(|e| e.to_string()),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve(_)) {
        allocator::log_live_heap();
    } else {
        allocator::keep_freed_memory();
    }
    if let Err(e) = run(cli.command) {
        eprintln!("tessera: {e}");
        std::process::exit(1);
    }
}
