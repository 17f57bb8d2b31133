//! Helpers shared by Tessera's integration tests.
//!
//! The crash suite runs `crash-writer` (in `src/bin`) as a child process,
//! kills it with SIGKILL at random moments, and checks the data directory
//! against the writes the child acknowledged on stdout.
//!
//! [`fuzz`] holds the fuzz targets' bodies, which `fuzz/` and the corpus
//! replay test share.

pub mod fuzz;

/// One acknowledged write, as printed by `crash-writer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Entity key.
    pub key: Vec<u8>,
    /// Event time of the version.
    pub event_ts: i64,
    /// Commit sequence of the version.
    pub seq: u64,
}

/// Table the crash writer uses.
pub const CRASH_TABLE: u32 = 7;

/// The value the crash writer stores for a version, so a reader can tell a
/// correct value from a damaged or misplaced one.
pub fn crash_value(key: &[u8], event_ts: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(key);
    v.extend_from_slice(b"@");
    v.extend_from_slice(event_ts.to_string().as_bytes());
    // Padding makes rows span blocks and memtables fill quickly.
    v.resize(200 + (event_ts.unsigned_abs() % 50) as usize, b'.');
    v
}

/// Parses one `ACK <key> <event_ts> <seq>` line; `None` for anything else
/// (such as a line cut short by the kill).
pub fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.split(' ');
    if parts.next()? != "ACK" {
        return None;
    }
    let key = parts.next()?.as_bytes().to_vec();
    let event_ts = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(Ack { key, event_ts, seq })
}
