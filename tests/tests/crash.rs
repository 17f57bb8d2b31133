//! Crash test: a child process writes with `sync` durability and is killed
//! with SIGKILL at random moments, over many cycles on one data directory.
//! After each kill the directory is opened in this process and every version
//! the child acknowledged must be there, with its value, by `latest`,
//! `as_of` and `history`; the hash index must agree with a full scan.

use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;
use tessera_storage::{Engine, Options};
use tessera_tests::{crash_value, parse_ack, Ack, CRASH_TABLE};

const CYCLES: usize = 50;
/// Older acknowledged versions re-checked per cycle (all at the last cycle).
const SAMPLE_OLDER: usize = 300;

/// Kills the child after `wait`, returning everything it printed. Its
/// stdout is drained concurrently so a full pipe never stalls the writer.
fn kill_after(child: &mut std::process::Child, wait: Duration) -> String {
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    std::thread::sleep(wait);
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    reader.join().expect("stdout reader")
}

/// Opens the directory and checks `to_check` (a subset of `acked`, to keep
/// the suite fast) plus every key's newest acknowledged version.
fn check(dir: &std::path::Path, acked: &HashMap<(Vec<u8>, i64), Ack>, to_check: &[&Ack]) {
    let engine = Engine::open(dir, Options::default()).expect("reopen after kill");
    let report = engine
        .verify_index()
        .expect("index agrees with scan, no corruption");
    assert!(report.versions as usize >= acked.len());
    let mut newest: HashMap<&[u8], i64> = HashMap::new();
    for (key, e) in acked.keys() {
        let n = newest.entry(key.as_slice()).or_insert(*e);
        *n = (*n).max(*e);
    }
    for ack in to_check {
        let (key, e) = (&ack.key, &ack.event_ts);
        let hist = engine.history(CRASH_TABLE, key, *e, *e).expect("history");
        let v = hist
            .iter()
            .find(|v| v.seq == ack.seq)
            .unwrap_or_else(|| panic!("acknowledged version {ack:?} missing from history"));
        assert_eq!(v.value.as_deref(), Some(crash_value(key, *e).as_slice()));
        let at = engine
            .as_of(CRASH_TABLE, key, *e, None)
            .expect("as_of")
            .expect("as_of finds an acknowledged version");
        assert!(
            at.event_ts == *e && at.seq >= ack.seq,
            "as_of {ack:?} gave {at:?}"
        );
    }
    for (key, e) in newest {
        let latest = engine
            .latest(CRASH_TABLE, key)
            .expect("latest")
            .expect("present");
        assert!(
            latest.event_ts >= e,
            "latest of {key:?} older than acknowledged"
        );
        assert_eq!(latest.value, crash_value(key, latest.event_ts));
    }
    // Half the time close cleanly (index checkpoint), half the time drop.
    if rand::random::<bool>() {
        engine.close().expect("close");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    // TESSERA_KEEP_CRASH_DIR=1 keeps the directory (for post-mortem
    // inspection with `tessera check`).
    if std::env::var_os("TESSERA_KEEP_CRASH_DIR").is_some() {
        eprintln!("crash directory: {}", tmp.keep().display());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7e55e7a);
    let mut acked: HashMap<(Vec<u8>, i64), Ack> = HashMap::new();
    let mut next_ts: i64 = 1_000_000;
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&dir)
            .arg(rng.gen::<u32>().to_string())
            .arg(next_ts.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crash-writer");
        let out = kill_after(&mut child, Duration::from_millis(rng.gen_range(30..300)));
        let fresh: Vec<Ack> = out.lines().filter_map(parse_ack).collect();
        for ack in &fresh {
            next_ts = next_ts.max(ack.event_ts + 1);
            acked.insert((ack.key.clone(), ack.event_ts), ack.clone());
        }
        next_ts += 10_000;
        let opened = out
            .lines()
            .find(|l| l.starts_with("OPENED"))
            .unwrap_or("not opened");
        let max_seq = fresh.iter().map(|a| a.seq).max().unwrap_or(0);
        eprintln!(
            "cycle {cycle}: {opened}; {} new acknowledged versions up to seq {max_seq}",
            fresh.len()
        );
        let last = cycle + 1 == CYCLES;
        let mut sample: Vec<&Ack> = fresh.iter().collect();
        let older: Vec<&Ack> = acked.values().collect();
        if last {
            sample.extend(older);
        } else {
            for _ in 0..SAMPLE_OLDER.min(older.len()) {
                sample.push(older[rng.gen_range(0..older.len())]);
            }
        }
        check(&dir, &acked, &sample);
    }
    assert!(
        acked.len() > 1000,
        "the writer acknowledged too little to test anything"
    );
}
