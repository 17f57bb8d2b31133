//! `tessera-bench`: Tessera's benchmark load generator.
//!
//! Subcommands:
//! - `engine`: the storage engine's figures (slate latency, as-of lookups,
//!   ingest, reopen, index RAM, disk use, cold reads per I/O backend).

mod dataset;
mod engine_bench;

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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Engine(args) => engine_bench::run(&args),
    };
    if let Err(e) = result {
        eprintln!("tessera-bench: {e}");
        std::process::exit(1);
    }
}
