//! `tessera-bench`: Tessera's benchmark load generator.
//!
//! Subcommands:
//! - `engine`: the storage engine's figures (slate latency, as-of lookups,
//!   ingest, reopen, index RAM, disk use, cold reads per I/O backend);
//! - `gen`: the news-feed dataset as Parquet files;
//! - `load`: writes the news-feed dataset into a running target;
//! - `slate`: the standard slate against a running server (Tessera, Redis
//!   or Cassandra 2.1), closed- or open-loop, with latency percentiles and
//!   server and client CPU;
//! - `mixed`: the same slates while article rows are written at a steady
//!   rate;
//! - `ping`: the per-request floor (protocol `PING`s, or a bare echo);
//! - `offline`: import, export and pit-join figures, and slates during an
//!   import;
//! - `hostile`: hostile clients (random bytes, huge lengths, half-open,
//!   slowloris, thousands of connections, pipelining floods, clients that
//!   never read) and what they cost a victim's slates and the server's RSS;
//! - `soak`: slates, writes, flushes, compactions and imports for minutes,
//!   sampled every 10 s, failing on any error or an RSS or p99 trend.

mod cassandra_peer;
mod cql;
mod dataset;
mod engine_bench;
mod floor_bench;
mod gen_bench;
mod hostile;
mod net_bench;
mod offline_bench;
mod redis_peer;
#[cfg(feature = "rocksdb")]
mod rocksdb_peer;
mod soak;

use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: the engine allocates and frees
/// cache blocks and per-read buffers constantly, and on the warm slate
/// benchmark mimalloc is about 10% faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tessera-bench", about = "Tessera benchmarks", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Storage-engine figures on the news-feed dataset (no network).
    Engine(engine_bench::EngineArgs),
    /// Write the news-feed dataset as Parquet files.
    Gen(gen_bench::GenArgs),
    /// Load the news-feed dataset into a running server.
    Load(net_bench::LoadArgs),
    /// Slates against a running server: latency percentiles and CPU.
    Slate(net_bench::SlateArgs),
    /// Slates while article rows are written at a steady rate.
    Mixed(net_bench::MixedArgs),
    /// Round trips that do no work: the floor under the slate figures.
    Ping(floor_bench::PingArgs),
    /// Offline figures: import, export and pit-join; slates during an import.
    Offline(offline_bench::OfflineArgs),
    /// Hostile clients against a running server: victim slate latency,
    /// server RSS and liveness during each attack.
    Hostile(hostile::HostileArgs),
    /// A long mixed load (slates, writes, imports) sampled every 10 s: RSS
    /// and p99 trends, errors, and a pass/fail verdict.
    Soak(soak::SoakArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Engine(args) => engine_bench::run(&args),
        Command::Gen(args) => gen_bench::run(&args).map_err(|e| e as Box<dyn std::error::Error>),
        Command::Load(args) => net_bench::load(&args).map_err(|e| e as Box<dyn std::error::Error>),
        Command::Slate(args) => {
            net_bench::slate(&args).map_err(|e| e as Box<dyn std::error::Error>)
        }
        Command::Mixed(args) => {
            net_bench::mixed(&args).map_err(|e| e as Box<dyn std::error::Error>)
        }
        Command::Ping(args) => {
            floor_bench::ping(&args).map_err(|e| e as Box<dyn std::error::Error>)
        }
        Command::Offline(args) => {
            offline_bench::offline(&args).map_err(|e| e as Box<dyn std::error::Error>)
        }
        Command::Hostile(args) => {
            hostile::hostile(&args).map_err(|e| e as Box<dyn std::error::Error>)
        }
        Command::Soak(args) => soak::soak(&args).map_err(|e| e as Box<dyn std::error::Error>),
    };
    if let Err(e) = result {
        eprintln!("tessera-bench: {e}");
        std::process::exit(1);
    }
}
