//! The client commands of the `tessera` binary: `plan`, `apply`,
//! `registry history`, `put`, `delete`, `get`, `history`, `stats`, and
//! the offline tools `import`, `export` and `pit-join`.
//!
//! Each talks to a running server over the protocol, with `--addr` and
//! `--token` (or `TESSERA_TOKEN`). Errors are one line on stderr and a
//! non-zero exit status (see `main.rs`).

mod export;
mod get;
mod import;
mod parquet_out;
mod pit_join;
mod registry;
mod rows;
mod values;

pub use export::{export, ExportArgs};
pub use get::{get, history, stats, GetArgs, HistoryArgs};
pub use import::{import, ImportArgs};
pub use pit_join::{pit_join, PitJoinArgs};
pub use registry::{apply, plan, registry_history};
pub use rows::{delete, put};

use tessera_protocol::{Client, ClientOptions};
use tessera_server::columnar::{arrow_columns, arrow_rows};

/// Default server address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7411";

/// Where the server is and how to authenticate.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long, default_value = DEFAULT_ADDR, global = true)]
    pub addr: String,
    /// Access token (default: the TESSERA_TOKEN environment variable).
    #[arg(
        long,
        env = "TESSERA_TOKEN",
        default_value = "",
        hide_env_values = true,
        global = true
    )]
    pub token: String,
}

/// A command's failure, printed as one line.
pub type CliError = String;

/// Connects and authenticates.
pub fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    let opts = ClientOptions {
        token: args.token.clone(),
        client_name: "tessera-cli".into(),
        ..ClientOptions::default()
    };
    Client::connect(args.addr.as_str(), opts).map_err(|e| format!("{}: {e}", args.addr))
}
