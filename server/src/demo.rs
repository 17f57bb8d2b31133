//! `tessera demo` and `tessera check`.

use std::path::Path;
use tessera_storage::{AsOfQuery, Engine, Options, Result, TableOptions, WriteBatch};

const USERS: u32 = 1;
const ARTICLES: u32 = 2;
const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 24 * HOUR_US;

fn key(prefix: &str, id: u32) -> Vec<u8> {
    format!("{prefix}:{id:06}").into_bytes()
}

/// Loads a sample and prints what each kind of read returns.
pub fn run(dir: &Path) -> Result<()> {
    let engine = Engine::open(dir, Options::default())?;
    println!(
        "opened {} (read backend: {})",
        dir.display(),
        engine.io_backend()
    );
    engine.configure_table(
        ARTICLES,
        TableOptions {
            ttl_us: Some(7 * DAY_US),
            retention_us: Some(365 * DAY_US),
        },
    )?;
    let now = engine.now();
    let mut batch = WriteBatch::new();
    for id in 0..1000 {
        for (age_h, clicks) in [(48, 1), (24, 5), (1, 9)] {
            let row = format!("clicks_1h={}", clicks * (id % 7 + 1));
            batch.put(
                USERS,
                &key("user", id),
                now - age_h * HOUR_US,
                row.as_bytes(),
            )?;
        }
    }
    for id in 0..200 {
        let row = format!("popularity_10m={}", id * 3);
        batch.put(
            ARTICLES,
            &key("article", id),
            now - 2 * HOUR_US,
            row.as_bytes(),
        )?;
    }
    let info = engine.write(batch)?;
    println!(
        "committed seq {}..={} at ingest_ts {}",
        info.first_seq, info.last_seq, info.ingest_ts
    );

    // A late event: older than the newest version, kept in history only.
    engine.put(
        USERS,
        &key("user", 7),
        now - 72 * HOUR_US,
        b"clicks_1h=late",
    )?;
    engine.flush()?;

    let slate: Vec<Vec<u8>> = (0..50).map(|i| key("article", i * 4)).collect();
    let refs: Vec<&[u8]> = slate.iter().map(|k| k.as_slice()).collect();
    let rows = engine.multi_latest(ARTICLES, &refs)?;
    let found = rows.iter().filter(|r| r.is_some()).count();
    println!("slate: 50 articles requested, {found} found");

    let u = key("user", 7);
    let show = |label: &str, r: Option<tessera_storage::Row>| match r {
        Some(r) => println!(
            "{label}: {} (event_ts {})",
            String::from_utf8_lossy(&r.value),
            r.event_ts
        ),
        None => println!("{label}: absent"),
    };
    show("latest(user:7)", engine.latest(USERS, &u)?);
    show(
        "as_of(user:7, now-30h)",
        engine.as_of(USERS, &u, now - 30 * HOUR_US, None)?,
    );
    let q = [AsOfQuery {
        key: &u,
        as_of: now - 60 * HOUR_US,
        known_at: Some(info.ingest_ts),
    }];
    show(
        "as_of(user:7, now-60h, known_at=first commit)",
        engine.multi_as_of(USERS, &q)?.pop().flatten(),
    );
    let history = engine.history(USERS, &u, now - 100 * HOUR_US, now)?;
    println!("history(user:7): {} versions, newest first", history.len());
    for v in history {
        println!(
            "  event_ts {} seq {} {:?}",
            v.event_ts,
            v.seq,
            v.value.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
    }
    let s = engine.stats();
    println!(
        "index: {} entities in {} bytes; SSTs per level {:?}",
        s.index_entities, s.index_bytes, s.ssts_per_level
    );
    engine.close()
}

/// Recovers `dir` and verifies the index against a full scan.
pub fn check(dir: &Path) -> Result<()> {
    let engine = Engine::open(dir, Options::default())?;
    let report = engine.verify_index()?;
    println!(
        "ok: {} entities, {} versions, {} index entries",
        report.entities, report.versions, report.index_entries
    );
    engine.close()
}
