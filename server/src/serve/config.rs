//! The server's settings: defaults, an optional TOML file (`--config`), and
//! command-line flags, which override the file.
//!
//! Invariant: a [`ServeConfig`] that passed [`ServeConfig::validate`] never
//! listens on a non-loopback address without tokens unless
//! `allow_insecure_remote` says so explicitly.

use super::bulk::MAX_BULK_NICENESS;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tessera_protocol::{Role, DEFAULT_MAX_FRAME_BYTES, MAX_FRAME_BYTES_LIMIT, MIN_FRAME_BYTES};

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./tessera-data";
/// Default address of the binary protocol.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7411";
/// Default address of `/metrics` and `/healthz`.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:7412";
/// Default most connections served at once; more are refused.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default longest a request may wait before it starts executing.
pub const DEFAULT_REQUEST_DEADLINE_MS: u64 = 5_000;
/// Default longest a connection may stay idle (or half-sent) before it is
/// closed.
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 300;
/// Default most bulk imports open at once.
pub const DEFAULT_MAX_CONCURRENT_IMPORTS: usize = 2;
/// Default most rows per second one import session is fed at: above what
/// one import reaches on two cores, so it bounds a session's disk
/// bandwidth while the lowered priority of bulk work
/// ([`DEFAULT_BULK_NICENESS`]) is what keeps slates fast.
pub const DEFAULT_IMPORT_MAX_ROWS_PER_S: u32 = 2_000_000;
/// Default nice levels bulk work (imports, exports) runs below serving.
pub const DEFAULT_BULK_NICENESS: u8 = 10;
/// Default nice levels online writes (`PUT`, `DELETE`) run below reads.
pub const DEFAULT_WRITE_NICENESS: u8 = 5;
/// Default longest graceful shutdown waits for requests in flight.
pub const DEFAULT_SHUTDOWN_GRACE_S: u64 = 10;

/// One access token.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret the client sends in `HELLO`.
    pub token: String,
    /// `read`, `write` or `admin`.
    pub role: String,
    /// Who holds it, for audit records and logs.
    pub identity: String,
}

/// The WAL durability policy, as written in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DurabilitySetting {
    /// fsync before each acknowledgement.
    Sync,
    /// fsync at most every this many milliseconds.
    IntervalMs(u64),
    /// Never fsync the WAL.
    None,
}

impl DurabilitySetting {
    /// Parses `sync`, `none` or `interval:<ms>`.
    pub fn parse(s: &str) -> Result<DurabilitySetting, String> {
        match s {
            "sync" => Ok(DurabilitySetting::Sync),
            "none" => Ok(DurabilitySetting::None),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.trim_end_matches("ms").parse().ok())
                .filter(|&ms| ms > 0)
                .map(DurabilitySetting::IntervalMs)
                .ok_or_else(|| {
                    format!("durability `{s}`: expected `sync`, `none` or `interval:<ms>` (ms > 0)")
                }),
        }
    }

    /// The engine's policy.
    pub fn to_engine(self) -> tessera_storage::Durability {
        match self {
            DurabilitySetting::Sync => tessera_storage::Durability::Sync,
            DurabilitySetting::IntervalMs(ms) => {
                tessera_storage::Durability::Interval(Duration::from_millis(ms))
            }
            DurabilitySetting::None => tessera_storage::Durability::None,
        }
    }
}

/// The config file's shape: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// See [`ServeConfig::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`ServeConfig::listen`].
    pub listen: Option<SocketAddr>,
    /// See [`ServeConfig::metrics_listen`].
    pub metrics_listen: Option<SocketAddr>,
    /// See [`ServeConfig::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`ServeConfig::max_frame_bytes`].
    pub max_frame_bytes: Option<usize>,
    /// See [`ServeConfig::request_deadline`], in milliseconds.
    pub request_deadline_ms: Option<u64>,
    /// See [`ServeConfig::idle_timeout`], in seconds.
    pub idle_timeout_s: Option<u64>,
    /// See [`ServeConfig::shutdown_grace`], in seconds.
    pub shutdown_grace_s: Option<u64>,
    /// `sync`, `none` or `interval:<ms>`.
    pub durability: Option<String>,
    /// See [`ServeConfig::block_cache_mib`].
    pub block_cache_mib: Option<usize>,
    /// See [`ServeConfig::memtable_mib`].
    pub memtable_mib: Option<usize>,
    /// See [`ServeConfig::worker_threads`].
    pub worker_threads: Option<usize>,
    /// See [`ServeConfig::pin_workers`].
    pub pin_workers: Option<bool>,
    /// See [`ServeConfig::huge_pages`].
    pub huge_pages: Option<bool>,
    /// See [`ServeConfig::allow_insecure_remote`].
    pub allow_insecure_remote: Option<bool>,
    /// See [`ServeConfig::max_concurrent_imports`].
    pub max_concurrent_imports: Option<usize>,
    /// See [`ServeConfig::import_max_rows_per_s`].
    pub import_max_rows_per_s: Option<u32>,
    /// See [`ServeConfig::import_sort_mib`].
    pub import_sort_mib: Option<usize>,
    /// See [`ServeConfig::bulk_niceness`].
    pub bulk_niceness: Option<u8>,
    /// See [`ServeConfig::write_niceness`].
    pub write_niceness: Option<u8>,
    /// Access tokens; none means local development mode.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

impl ConfigFile {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> Result<ConfigFile, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }
}

/// Everything `tessera serve` runs with.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where the engine (`engine/`) and the registry (`registry/`) live.
    pub data_dir: PathBuf,
    /// Address of the binary protocol.
    pub listen: SocketAddr,
    /// Address of `/metrics` and `/healthz`; `None` disables them.
    pub metrics_listen: Option<SocketAddr>,
    /// Connections served at once; more are refused with `UNAVAILABLE`.
    pub max_connections: usize,
    /// Largest frame accepted or sent, header included.
    pub max_frame_bytes: usize,
    /// Longest a request may wait between its frame being read and its
    /// execution starting.
    pub request_deadline: Duration,
    /// Longest a connection may sit idle, or take to send one frame.
    pub idle_timeout: Duration,
    /// Longest shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// The WAL's durability policy.
    pub durability: DurabilitySetting,
    /// Block cache size; `None`: the engine's default.
    pub block_cache_mib: Option<usize>,
    /// Size at which a memtable is frozen and flushed to an SST; `None`: the
    /// engine's default.
    pub memtable_mib: Option<usize>,
    /// Async worker threads; `None`: one per core.
    pub worker_threads: Option<usize>,
    /// Pin each worker to a core of its own (when there are cores enough),
    /// so a woken worker never waits behind a busy one.
    pub pin_workers: bool,
    /// Let the process use transparent huge pages. Off by default: the
    /// kernel would make memory the allocator freed resident again, and
    /// the RSS would grow with no more memory in use (see `huge_pages.rs`).
    pub huge_pages: bool,
    /// Allow a non-loopback listen address without tokens.
    pub allow_insecure_remote: bool,
    /// Bulk imports open at once; more are refused with `UNAVAILABLE`.
    pub max_concurrent_imports: usize,
    /// The fastest one import session is fed, rows per second: bulk loads
    /// must not take the CPU and disk that serving needs.
    pub import_max_rows_per_s: u32,
    /// Memory each import buffers rows in, half filling while the other
    /// half is sorted and spilled as a run; `None`: the engine's default
    /// (256 MiB).
    pub import_sort_mib: Option<usize>,
    /// How many nice levels below serving imports and exports run (0 to
    /// 19): on busy cores the scheduler runs slates first.
    pub bulk_niceness: u8,
    /// How many nice levels below reads `PUT` and `DELETE` run (0 to 19):
    /// on busy cores a slate is not kept waiting by a batch of writes,
    /// which still get a share of the cores (about a third at 5 levels).
    pub write_niceness: u8,
    /// Access tokens; none means local development mode.
    pub tokens: Vec<TokenConfig>,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: parse_default(DEFAULT_LISTEN),
            metrics_listen: Some(parse_default(DEFAULT_METRICS_LISTEN)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            request_deadline: Duration::from_millis(DEFAULT_REQUEST_DEADLINE_MS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_S),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_S),
            durability: DurabilitySetting::IntervalMs(5),
            block_cache_mib: None,
            memtable_mib: None,
            worker_threads: None,
            pin_workers: true,
            huge_pages: false,
            allow_insecure_remote: false,
            max_concurrent_imports: DEFAULT_MAX_CONCURRENT_IMPORTS,
            import_max_rows_per_s: DEFAULT_IMPORT_MAX_ROWS_PER_S,
            import_sort_mib: None,
            bulk_niceness: DEFAULT_BULK_NICENESS,
            write_niceness: DEFAULT_WRITE_NICENESS,
            tokens: Vec::new(),
        }
    }
}

fn parse_default(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl ServeConfig {
    /// The defaults overridden by `file`.
    pub fn from_file(file: ConfigFile) -> Result<ServeConfig, String> {
        let d = ServeConfig::default();
        let durability = match file.durability {
            Some(s) => DurabilitySetting::parse(&s)?,
            None => d.durability,
        };
        Ok(ServeConfig {
            data_dir: file.data_dir.unwrap_or(d.data_dir),
            listen: file.listen.unwrap_or(d.listen),
            metrics_listen: file.metrics_listen.or(d.metrics_listen),
            max_connections: file.max_connections.unwrap_or(d.max_connections),
            max_frame_bytes: file.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            request_deadline: file
                .request_deadline_ms
                .map_or(d.request_deadline, Duration::from_millis),
            idle_timeout: file
                .idle_timeout_s
                .map_or(d.idle_timeout, Duration::from_secs),
            shutdown_grace: file
                .shutdown_grace_s
                .map_or(d.shutdown_grace, Duration::from_secs),
            durability,
            block_cache_mib: file.block_cache_mib,
            memtable_mib: file.memtable_mib,
            worker_threads: file.worker_threads,
            pin_workers: file.pin_workers.unwrap_or(d.pin_workers),
            huge_pages: file.huge_pages.unwrap_or(d.huge_pages),
            allow_insecure_remote: file.allow_insecure_remote.unwrap_or(false),
            max_concurrent_imports: file
                .max_concurrent_imports
                .unwrap_or(d.max_concurrent_imports),
            import_max_rows_per_s: file
                .import_max_rows_per_s
                .unwrap_or(d.import_max_rows_per_s),
            import_sort_mib: file.import_sort_mib,
            bulk_niceness: file.bulk_niceness.unwrap_or(d.bulk_niceness),
            write_niceness: file.write_niceness.unwrap_or(d.write_niceness),
            tokens: file.tokens,
        })
    }

    /// Async worker threads the runtime gets: the setting, or one per core.
    pub(crate) fn workers(&self) -> usize {
        self.worker_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Checks the settings together; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.tokens.is_empty() && !self.listen.ip().is_loopback() && !self.allow_insecure_remote
        {
            return Err(format!(
                "refusing to listen on {} without auth: configure tokens, listen on loopback, \
                 or pass --allow-insecure-remote",
                self.listen
            ));
        }
        // `/metrics` and `/healthz` have no authentication: they stay on
        // loopback unless the operator says otherwise.
        if let Some(m) = self.metrics_listen {
            if !m.ip().is_loopback() && !self.allow_insecure_remote {
                return Err(format!(
                    "refusing to serve /metrics on {m}: it has no authentication; keep it on loopback \
                     (put a proxy in front) or pass --allow-insecure-remote"
                ));
            }
        }
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES_LIMIT).contains(&self.max_frame_bytes) {
            return Err(format!(
                "max_frame_bytes {} is outside {MIN_FRAME_BYTES}..={MAX_FRAME_BYTES_LIMIT}",
                self.max_frame_bytes
            ));
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.idle_timeout.is_zero() {
            return Err(
                "idle_timeout_s must be at least 1: 0 would close every connection at once".into(),
            );
        }
        if self.memtable_mib == Some(0) {
            return Err("memtable_mib must be at least 1".into());
        }
        if self.import_sort_mib == Some(0) {
            return Err("import_sort_mib must be at least 1".into());
        }
        if self.import_max_rows_per_s == 0 {
            return Err("import_max_rows_per_s must be at least 1".into());
        }
        for (name, niceness) in [
            ("bulk_niceness", self.bulk_niceness),
            ("write_niceness", self.write_niceness),
        ] {
            if niceness > MAX_BULK_NICENESS {
                return Err(format!(
                    "{name} {niceness} is over {MAX_BULK_NICENESS}, the lowest priority there is"
                ));
            }
        }
        if self.worker_threads == Some(0) {
            return Err("worker_threads must be at least 1".into());
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.tokens {
            if role_of(&t.role).is_none() {
                return Err(format!(
                    "token of `{}`: role `{}` is not read, write or admin",
                    t.identity, t.role
                ));
            }
            if t.token.is_empty() {
                return Err(format!("token of `{}` is empty", t.identity));
            }
            if !seen.insert(&t.token) {
                return Err(format!("token of `{}` is configured twice", t.identity));
            }
        }
        Ok(())
    }
}

/// The role a config names.
pub fn role_of(name: &str) -> Option<Role> {
    match name {
        "read" => Some(Role::Read),
        "write" => Some(Role::Write),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses() {
        assert_eq!(
            DurabilitySetting::parse("sync"),
            Ok(DurabilitySetting::Sync)
        );
        assert_eq!(
            DurabilitySetting::parse("none"),
            Ok(DurabilitySetting::None)
        );
        assert_eq!(
            DurabilitySetting::parse("interval:5ms"),
            Ok(DurabilitySetting::IntervalMs(5))
        );
        assert_eq!(
            DurabilitySetting::parse("interval:20"),
            Ok(DurabilitySetting::IntervalMs(20))
        );
        for bad in ["", "fast", "interval:", "interval:0", "interval:-3"] {
            assert!(DurabilitySetting::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_listen_without_tokens_is_refused() {
        let mut c = ServeConfig {
            listen: "0.0.0.0:7411".parse().unwrap(),
            ..ServeConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("without auth"));
        c.allow_insecure_remote = true;
        assert!(c.validate().is_ok());
        c.allow_insecure_remote = false;
        c.metrics_listen = Some("0.0.0.0:7412".parse().unwrap());
        c.listen = "127.0.0.1:7411".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("/metrics"));
        c.metrics_listen = Some("127.0.0.1:7412".parse().unwrap());
        c.listen = "0.0.0.0:7411".parse().unwrap();
        c.tokens.push(TokenConfig {
            token: "s3cret".into(),
            role: "read".into(),
            identity: "ranker".into(),
        });
        assert!(c.validate().is_ok());
        assert!(ServeConfig::default().validate().is_ok());
    }

    #[test]
    fn bad_tokens_and_limits_are_refused() {
        let token = |t: &str, r: &str| TokenConfig {
            token: t.into(),
            role: r.into(),
            identity: "x".into(),
        };
        let with = |tokens| ServeConfig {
            tokens,
            ..ServeConfig::default()
        };
        assert!(with(vec![token("a", "root")]).validate().is_err());
        assert!(with(vec![token("", "read")]).validate().is_err());
        assert!(with(vec![token("a", "read"), token("a", "admin")])
            .validate()
            .is_err());
        let tiny = ServeConfig {
            max_frame_bytes: 100,
            ..ServeConfig::default()
        };
        assert!(tiny.validate().is_err());
        let below_lowest = MAX_BULK_NICENESS + 1;
        for (name, config) in [
            (
                "bulk_niceness",
                ServeConfig {
                    bulk_niceness: below_lowest,
                    ..ServeConfig::default()
                },
            ),
            (
                "write_niceness",
                ServeConfig {
                    write_niceness: below_lowest,
                    ..ServeConfig::default()
                },
            ),
        ] {
            assert!(config.validate().unwrap_err().contains(name), "{name}");
        }
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let file: ConfigFile = toml::from_str(
            "listen = \"127.0.0.1:9000\"\ndurability = \"sync\"\n\
             [[tokens]]\ntoken = \"t\"\nrole = \"admin\"\nidentity = \"ops\"\n",
        )
        .unwrap();
        let c = ServeConfig::from_file(file).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.durability, DurabilitySetting::Sync);
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.bulk_niceness, DEFAULT_BULK_NICENESS);
        let file: ConfigFile = toml::from_str("bulk_niceness = 0").unwrap();
        assert_eq!(ServeConfig::from_file(file).unwrap().bulk_niceness, 0);
        assert_eq!(c.write_niceness, DEFAULT_WRITE_NICENESS);
        let file: ConfigFile = toml::from_str("write_niceness = 0").unwrap();
        assert_eq!(ServeConfig::from_file(file).unwrap().write_niceness, 0);
        assert!(toml::from_str::<ConfigFile>("lisen = \"x\"").is_err());
    }
}
