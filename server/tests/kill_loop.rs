//! Kill loop against the real server: writers put and delete through the
//! Rust client on a server running with `sync` durability and record every
//! acknowledged commit; the `tessera` process is SIGKILLed at a random
//! moment (now and then while it is still recovering), then restarted on the
//! same data directory. After each kill:
//!
//! - `tessera check` recovers the engine offline and verifies the hash
//!   index against a full scan, reading every block (no corruption);
//! - after the restart, every acknowledged version is readable by latest
//!   (every key), `as_of` (a sample of versions) and history (a sample of
//!   keys, exactly: nothing missing, nothing extra);
//! - a write in flight at the kill may or may not have landed; once the
//!   next restart has decided, it stays decided.
//!
//! A small memtable makes flushes and compactions run during the loop, so
//! kills land in them too. `TESSERA_KILL_CYCLES` sets the number of cycles
//! (`scripts/killloop.sh --cycles 2000` is the long run); `TESSERA_KILL_SEED`
//! replays one run.

mod common;

use common::{now_us, TestServer, DAY_US};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_protocol::{
    Client, ClientError, ClientOptions, Delete, HistoryRequest, Put, PutRow, SlatePart,
    SlateRequest, Value,
};

const DEFAULT_CYCLES: usize = 100;
const WRITERS: usize = 2;
/// Users written; few enough that every key collects many versions.
const KEYS: i64 = 400;
/// Most rows in one `PUT` (a batch is all-or-nothing).
const MAX_ROWS_PER_PUT: usize = 8;
/// Share of requests that are `DELETE`s.
const DELETE_SHARE: f64 = 0.1;
/// Versions re-read by `as_of`, and keys by history, after each restart.
const SAMPLE_VERSIONS: usize = 150;
const SAMPLE_KEYS: usize = 40;
/// The server runs at most this long before it is killed.
const MAX_RUN: Duration = Duration::from_millis(250);
/// Share of cycles that kill the server while it is still recovering.
const KILL_IN_RECOVERY_SHARE: f64 = 0.1;
const GROUP: &str = "user_features";
const CONFIG: &str = "durability = \"sync\"\nmemtable_mib = 1\n";

/// What the test knows of one version: a row or a tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Row,
    Tombstone,
}

/// Versions per key, by event time (each event time is used once in the
/// whole run, so a version is named by its key and time).
type Versions = HashMap<i64, BTreeMap<i64, Kind>>;

/// Versions written by one request, or acknowledged by a writer:
/// `(user_id, event_ts, kind)`.
type Written = Vec<(i64, i64, Kind)>;

/// The versions known committed, and those in flight at the last kill.
#[derive(Default)]
struct Model {
    committed: Versions,
    in_doubt: Versions,
}

impl Model {
    fn versions(&self) -> usize {
        self.committed.values().map(BTreeMap::len).sum()
    }
}

/// Features written: `clicks_1h` and the embedding are derived from the
/// event time, so a value read back is checked against its version.
fn put_of(rows: &[(i64, i64)]) -> Put {
    Put {
        group: GROUP.into(),
        columns: vec![
            "user_id".into(),
            "clicks_1h".into(),
            "user_embedding".into(),
        ],
        rows: rows
            .iter()
            .map(|&(id, ts)| PutRow {
                event_ts: ts,
                values: vec![
                    Value::Int64(id),
                    Value::Int64(ts),
                    Value::Embedding(vec![(ts % 1000) as f32; 64]),
                ],
            })
            .collect(),
    }
}

/// Writes until the server goes away; returns what was acknowledged and
/// what was in flight when it did.
fn writer(client: Option<Client>, clock: &AtomicI64, seed: u64) -> (Written, Written) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acked = Vec::new();
    let Some(mut client) = client else {
        return (acked, Vec::new());
    };
    loop {
        let n = rng.gen_range(1..=MAX_ROWS_PER_PUT);
        let mut keys: Vec<i64> = (0..n).map(|_| rng.gen_range(0..KEYS)).collect();
        keys.sort_unstable();
        keys.dedup();
        let delete = rng.gen_bool(DELETE_SHARE);
        let kind = if delete { Kind::Tombstone } else { Kind::Row };
        let batch: Written = keys
            .iter()
            .map(|&id| (id, clock.fetch_add(1, Ordering::Relaxed), kind))
            .collect();
        let result = if delete {
            client.delete(&Delete {
                group: GROUP.into(),
                keys: batch
                    .iter()
                    .map(|&(id, ts, _)| (ts, vec![Value::Int64(id)]))
                    .collect(),
            })
        } else {
            let rows: Vec<(i64, i64)> = batch.iter().map(|&(id, ts, _)| (id, ts)).collect();
            client.put(&put_of(&rows))
        };
        match result {
            Ok(_) => acked.extend(batch),
            Err(ClientError::Server(e)) => panic!("the server refused a valid write: {e}"),
            // The kill: the connection is gone, the batch's fate unknown.
            Err(_) => return (acked, batch),
        }
    }
}

fn connect(server: &TestServer) -> Option<Client> {
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    Client::connect(server.addr, opts).ok()
}

fn sigkill(child: &mut std::process::Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Starts the server and kills it before it can finish recovering.
fn kill_during_recovery(dir: &Path, rng: &mut StdRng) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-metrics"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("tessera.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tessera");
    std::thread::sleep(Duration::from_millis(rng.gen_range(0..30)));
    sigkill(&mut child);
}

/// `tessera check`: offline recovery, then the index against a full scan.
fn check_offline(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("check")
        .arg("--data-dir")
        .arg(dir.join("data").join("engine"))
        .output()
        .expect("run tessera check");
    assert!(
        out.status.success(),
        "tessera check failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn history(client: &mut Client, id: i64) -> BTreeMap<i64, Kind> {
    let reply = client
        .history(&HistoryRequest {
            group: GROUP.into(),
            key: vec![Value::Int64(id)],
            from: i64::MIN,
            to: i64::MAX,
            features: vec!["clicks_1h".into()],
        })
        .expect("history");
    let clicks = reply.column("clicks_1h").expect("clicks_1h column");
    (0..reply.rows())
        .map(|i| {
            let ts = reply.event_ts(i);
            if reply.tombstone(i) {
                (ts, Kind::Tombstone)
            } else {
                assert_eq!(clicks.i64_at(i), Some(ts), "user {id} version {ts}: value");
                (ts, Kind::Row)
            }
        })
        .collect()
}

/// Decides each version left in doubt by the last kill: present now means
/// committed; absent means it never will be.
fn settle_in_doubt(client: &mut Client, model: &mut Model) {
    for (id, doubtful) in std::mem::take(&mut model.in_doubt) {
        let present = history(client, id);
        for (ts, kind) in doubtful {
            if let Some(found) = present.get(&ts) {
                assert_eq!(*found, kind, "user {id} version {ts}");
                model.committed.entry(id).or_default().insert(ts, kind);
            }
        }
    }
}

/// The latest version of every key, by one slate per chunk of keys.
fn check_latest(client: &mut Client, model: &Model) {
    let ids: Vec<i64> = (0..KEYS).collect();
    for chunk in ids.chunks(200) {
        let reply = client
            .get_slate(&SlateRequest {
                as_of: None,
                known_at: None,
                parts: vec![SlatePart {
                    group: GROUP.into(),
                    features: vec!["clicks_1h".into(), "user_embedding".into()],
                    keys: chunk.iter().map(|&id| vec![Value::Int64(id)]).collect(),
                }],
            })
            .expect("slate");
        let part = &reply.parts()[0];
        let clicks = part.column("clicks_1h").expect("clicks_1h");
        let embedding = part.column("user_embedding").expect("user_embedding");
        for (i, id) in chunk.iter().enumerate() {
            let newest = model.committed.get(id).and_then(|v| v.iter().next_back());
            match newest {
                Some((&ts, Kind::Row)) => {
                    assert!(part.found(i), "user {id}: acknowledged version {ts} lost");
                    assert_eq!(part.event_ts(i), ts, "user {id}: latest");
                    assert_eq!(clicks.i64_at(i), Some(ts), "user {id}: value");
                    let e = embedding.embedding_at(i).expect("embedding");
                    assert!(e.iter().all(|&x| x == (ts % 1000) as f32), "user {id}");
                }
                _ => assert!(!part.found(i), "user {id}: deleted or never written"),
            }
        }
    }
}

/// A sample of committed versions, each read `as_of` its own time.
fn check_as_of(client: &mut Client, model: &Model, rng: &mut StdRng, all: bool) {
    let versions: Written = model
        .committed
        .iter()
        .flat_map(|(&id, v)| v.iter().map(move |(&ts, &k)| (id, ts, k)))
        .collect();
    let sample = if all { versions.len() } else { SAMPLE_VERSIONS };
    for _ in 0..sample.min(versions.len()) {
        let (id, ts, kind) = versions[rng.gen_range(0..versions.len())];
        let reply = client
            .get_slate(&SlateRequest {
                as_of: Some(ts),
                known_at: None,
                parts: vec![SlatePart {
                    group: GROUP.into(),
                    features: vec!["clicks_1h".into()],
                    keys: vec![vec![Value::Int64(id)]],
                }],
            })
            .expect("as_of slate");
        let part = &reply.parts()[0];
        match kind {
            Kind::Row => {
                assert!(part.found(0), "user {id} as of {ts}: acknowledged row lost");
                assert_eq!(part.event_ts(0), ts, "user {id} as of {ts}");
                let clicks = part.column("clicks_1h").expect("clicks_1h");
                assert_eq!(clicks.i64_at(0), Some(ts), "user {id} as of {ts}: value");
            }
            Kind::Tombstone => assert!(!part.found(0), "user {id} as of {ts}: tombstone lost"),
        }
    }
}

/// A sample of keys (every key when `all`), whose full history must be
/// exactly the committed versions.
fn check_history(client: &mut Client, model: &Model, rng: &mut StdRng, all: bool) {
    let ids: Vec<i64> = if all {
        (0..KEYS).collect()
    } else {
        (0..SAMPLE_KEYS).map(|_| rng.gen_range(0..KEYS)).collect()
    };
    let none = BTreeMap::new();
    for id in ids {
        let expected = model.committed.get(&id).unwrap_or(&none);
        assert_eq!(&history(client, id), expected, "history of user {id}");
    }
}

fn cycles() -> usize {
    std::env::var("TESSERA_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CYCLES)
}

#[test]
fn acknowledged_writes_survive_sigkill_of_the_server() {
    let seed = std::env::var("TESSERA_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_us() as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let cycles = cycles();
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::write(dir.join("tessera.toml"), CONFIG).expect("config");
    let clock = Arc::new(AtomicI64::new(now_us() - DAY_US));
    let model = Arc::new(Mutex::new(Model::default()));
    let mut recovery_kills = 0;

    for cycle in 0..=cycles {
        if cycle > 0 {
            check_offline(dir);
            if rng.gen_bool(KILL_IN_RECOVERY_SHARE) {
                kill_during_recovery(dir, &mut rng);
                recovery_kills += 1;
            }
        }
        let mut server = TestServer::start_in(dir, Some(CONFIG), &[]);
        let mut client = connect(&server).expect("connect after restart");
        if cycle == 0 {
            server.apply_news_feed(&mut client);
        }
        let last = cycle == cycles;
        {
            let mut m = model.lock().expect("model");
            settle_in_doubt(&mut client, &mut m);
            check_latest(&mut client, &m);
            check_as_of(&mut client, &m, &mut rng, last);
            check_history(&mut client, &m, &mut rng, last);
        }
        if last {
            break;
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, clock) = (connect(&server), clock.clone());
                let seed = seed ^ ((cycle * WRITERS + w) as u64) << 32;
                std::thread::spawn(move || writer(client, &clock, seed))
            })
            .collect();
        std::thread::sleep(Duration::from_micros(
            rng.gen_range(0..MAX_RUN.as_micros() as u64),
        ));
        sigkill(&mut server.child);
        let mut m = model.lock().expect("model");
        for w in writers {
            let (acked, in_flight) = w.join().expect("writer thread");
            for (id, ts, kind) in acked {
                m.committed.entry(id).or_default().insert(ts, kind);
            }
            for (id, ts, kind) in in_flight {
                m.in_doubt.entry(id).or_default().insert(ts, kind);
            }
        }
    }
    let m = model.lock().expect("model");
    let ssts = std::fs::read_dir(dir.join("data/engine/sst")).map_or(0, |d| d.count());
    println!(
        "kill loop: {cycles} kills ({recovery_kills} more during recovery), {} acknowledged \
         versions all present, {ssts} SSTs at the end, {:.1} s, seed {seed}",
        m.versions(),
        started.elapsed().as_secs_f64()
    );
    assert!(m.versions() > cycles, "too few writes were acknowledged");
}
