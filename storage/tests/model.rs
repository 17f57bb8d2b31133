//! Model test: random sequences of writes, late writes, tombstones, reads,
//! flushes, compactions, clean reopens and crash reopens, checked against a
//! plain in-memory model of the documented semantics.

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use tessera_storage::{
    AsOfQuery, Clock, Durability, Engine, Options, Row, RowRef, TableOptions, Version, WriteBatch,
};

/// Table 1 has a TTL, table 2 a retention, table 3 neither.
const TABLES: [u32; 3] = [1, 2, 3];
const TTL: i64 = 40;
const RETENTION: i64 = 120;
const KEYS: usize = 6;

struct ManualClock(AtomicI64);
impl Clock for ManualClock {
    fn now_us(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        t: usize,
        k: usize,
        e: i64,
        v: u8,
    },
    Delete {
        t: usize,
        k: usize,
        e: i64,
    },
    Batch(Vec<(usize, usize, i64, Option<u8>)>),
    /// A bulk ingest into one table: `(key, event_ts, value or tombstone)`
    /// in input order (not sorted).
    Import {
        t: usize,
        items: Vec<(usize, i64, Option<u8>)>,
    },
    Tick(i64),
    Latest {
        t: usize,
        k: usize,
    },
    MultiLatest {
        t: usize,
        ks: Vec<usize>,
    },
    /// A batch mixing tables (and so their TTL and retention rules).
    MultiLatestAcross(Vec<(usize, usize)>),
    AsOf {
        t: usize,
        k: usize,
        at: i64,
        known: Option<i64>,
    },
    History {
        t: usize,
        k: usize,
        from: i64,
        to: i64,
    },
    /// Every key as of one time, as a training-set join reads them:
    /// sorted, then again in reverse.
    BulkAsOf {
        t: usize,
        at: i64,
        known: Option<i64>,
    },
    /// A snapshot's every entity as of one time, as an export reads it.
    ScanAsOf {
        t: usize,
        at: i64,
        known: Option<i64>,
    },
    Flush,
    Compact,
    Reopen,
    Crash,
    /// Re-configures table 3 between equivalent options, which commits the
    /// manifest without flushing.
    Touch,
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TABLES.len();
    let k = 0..KEYS;
    let e = 0i64..160;
    prop_oneof![
        6 => (t.clone(), k.clone(), e.clone(), any::<u8>()).prop_map(|(t, k, e, v)| Op::Put { t, k, e, v }),
        1 => (t.clone(), k.clone(), e.clone()).prop_map(|(t, k, e)| Op::Delete { t, k, e }),
        1 => prop::collection::vec((t.clone(), k.clone(), e.clone(), prop::option::of(any::<u8>())), 1..5).prop_map(Op::Batch),
        1 => (t.clone(), prop::collection::vec((k.clone(), e.clone(), prop::option::of(any::<u8>())), 0..24))
            .prop_map(|(t, items)| Op::Import { t, items }),
        2 => (0i64..6).prop_map(Op::Tick),
        3 => (t.clone(), k.clone()).prop_map(|(t, k)| Op::Latest { t, k }),
        2 => (t.clone(), prop::collection::vec(k.clone(), 1..8)).prop_map(|(t, ks)| Op::MultiLatest { t, ks }),
        2 => prop::collection::vec((t.clone(), k.clone()), 1..8).prop_map(Op::MultiLatestAcross),
        3 => (t.clone(), k.clone(), e.clone(), prop::option::of(0i64..600)).prop_map(|(t, k, at, known)| Op::AsOf { t, k, at, known }),
        2 => (t.clone(), k.clone(), e.clone(), e.clone()).prop_map(|(t, k, from, to)| Op::History { t, k, from, to }),
        1 => (t.clone(), e.clone(), prop::option::of(0i64..600)).prop_map(|(t, at, known)| Op::ScanAsOf { t, at, known }),
        1 => (t.clone(), e.clone(), prop::option::of(0i64..600)).prop_map(|(t, at, known)| Op::BulkAsOf { t, at, known }),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
        1 => Just(Op::Touch),
    ]
}

#[derive(Clone, Debug)]
struct MVersion {
    e: i64,
    ingest: i64,
    seq: u64,
    value: Option<Vec<u8>>,
}

#[derive(Default)]
struct Model {
    rows: BTreeMap<(u32, Vec<u8>), Vec<MVersion>>,
}

fn opts_for(t: u32) -> TableOptions {
    match t {
        1 => TableOptions {
            ttl_us: Some(TTL),
            retention_us: None,
        },
        2 => TableOptions {
            ttl_us: None,
            retention_us: Some(RETENTION),
        },
        _ => TableOptions::default(),
    }
}

fn retained(t: u32, e: i64, now: i64) -> bool {
    opts_for(t).retention_us.is_none_or(|r| e >= now - r)
}

impl Model {
    fn best(&self, t: u32, k: &[u8], pred: impl Fn(&MVersion) -> bool) -> Option<&MVersion> {
        self.rows
            .get(&(t, k.to_vec()))?
            .iter()
            .filter(|v| pred(v))
            .max_by_key(|v| (v.e, v.seq))
    }

    fn visible(
        t: u32,
        v: Option<&MVersion>,
        read_ts: i64,
        now: i64,
    ) -> Option<(i64, u64, Vec<u8>)> {
        let v = v?;
        let value = v.value.clone()?;
        if !retained(t, v.e, now) {
            return None;
        }
        if opts_for(t).ttl_us.is_some_and(|ttl| v.e < read_ts - ttl) {
            return None;
        }
        Some((v.e, v.seq, value))
    }

    fn latest(&self, t: u32, k: &[u8], now: i64) -> Option<(i64, u64, Vec<u8>)> {
        Self::visible(t, self.best(t, k, |_| true), now, now)
    }

    fn as_of(
        &self,
        t: u32,
        k: &[u8],
        at: i64,
        known: Option<i64>,
        now: i64,
    ) -> Option<(i64, u64, Vec<u8>)> {
        let v = self.best(t, k, |v| v.e <= at && known.is_none_or(|w| v.ingest <= w));
        Self::visible(t, v, at, now)
    }

    fn history(
        &self,
        t: u32,
        k: &[u8],
        from: i64,
        to: i64,
        now: i64,
    ) -> Vec<(i64, u64, Option<Vec<u8>>)> {
        let mut out: Vec<_> = self
            .rows
            .get(&(t, k.to_vec()))
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.e >= from && v.e <= to && retained(t, v.e, now))
                    .map(|v| (v.e, v.seq, v.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|v| std::cmp::Reverse((v.0, v.1)));
        out
    }
}

fn key(k: usize) -> Vec<u8> {
    format!("entity-{k:03}").into_bytes()
}

fn row_tuple(r: Option<Row>) -> Option<(i64, u64, Vec<u8>)> {
    r.map(|r| (r.event_ts, r.seq, r.value.to_vec()))
}

fn history_tuple(vs: Vec<Version>) -> Vec<(i64, u64, Option<Vec<u8>>)> {
    vs.into_iter()
        .map(|v| (v.event_ts, v.seq, v.value.map(|b| b.to_vec())))
        .collect()
}

fn engine_options(clock: Arc<ManualClock>) -> Options {
    Options {
        durability: Durability::None,
        memtable_bytes: 2048,
        block_bytes: 256,
        sst_target_bytes: 4096,
        l0_compaction_trigger: 2,
        l1_target_bytes: 8192,
        level_multiplier: 2,
        block_cache_bytes: 64 << 10,
        // A few versions per run, so imports spill and merge several.
        ingest_run_bytes: 1024,
        // More merge ranges than most imports have runs' blocks, so commits
        // merge in several ranges, some empty, whatever the machine.
        ingest_threads: 3,
        clock,
        ..Options::default()
    }
}

fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Engine {
    let engine = Engine::open(dir, engine_options(clock.clone())).expect("open");
    for t in TABLES {
        engine.configure_table(t, opts_for(t)).expect("configure");
    }
    engine
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock(AtomicI64::new(100)));
    let mut engine = Some(open(dir.path(), &clock));
    let mut model = Model::default();
    let mut touched = false;
    let value = |t: u32, k: usize, e: i64, v: u8| format!("t{t}k{k}e{e}v{v}").into_bytes();
    for op in ops {
        let eng = engine.as_ref().expect("engine open");
        let now = clock.now_us();
        match op {
            Op::Put { t, k, e, v } => {
                let t = TABLES[t];
                let info = eng.put(t, &key(k), e, &value(t, k, e, v)).expect("put");
                model.rows.entry((t, key(k))).or_default().push(MVersion {
                    e,
                    ingest: info.ingest_ts,
                    seq: info.first_seq,
                    value: Some(value(t, k, e, v)),
                });
            }
            Op::Delete { t, k, e } => {
                let t = TABLES[t];
                let info = eng.delete(t, &key(k), e).expect("delete");
                model.rows.entry((t, key(k))).or_default().push(MVersion {
                    e,
                    ingest: info.ingest_ts,
                    seq: info.first_seq,
                    value: None,
                });
            }
            Op::Batch(items) => {
                let mut b = WriteBatch::new();
                for &(t, k, e, v) in &items {
                    let t = TABLES[t];
                    match v {
                        Some(v) => b.put(t, &key(k), e, &value(t, k, e, v)).expect("batch put"),
                        None => b.delete(t, &key(k), e).expect("batch delete"),
                    }
                }
                let info = eng.write(b).expect("write batch");
                prop_assert_eq!(info.last_seq - info.first_seq + 1, items.len() as u64);
                for (i, &(t, k, e, v)) in items.iter().enumerate() {
                    let t = TABLES[t];
                    model.rows.entry((t, key(k))).or_default().push(MVersion {
                        e,
                        ingest: info.ingest_ts,
                        seq: info.first_seq + i as u64,
                        value: v.map(|v| value(t, k, e, v)),
                    });
                }
            }
            Op::Import { t, items } => {
                let t = TABLES[t];
                let mut ingest = eng.begin_ingest(t).expect("begin ingest");
                for &(k, e, v) in &items {
                    match v {
                        Some(v) => ingest.put(&key(k), e, &value(t, k, e, v)),
                        None => ingest.delete(&key(k), e),
                    }
                    .expect("ingest add");
                }
                let info = ingest.commit().expect("ingest commit");
                prop_assert_eq!(info.versions, items.len() as u64);
                for (i, &(k, e, v)) in items.iter().enumerate() {
                    model.rows.entry((t, key(k))).or_default().push(MVersion {
                        e,
                        ingest: info.ingest_ts,
                        seq: info.first_seq + i as u64,
                        value: v.map(|v| value(t, k, e, v)),
                    });
                }
            }
            Op::Tick(dt) => {
                clock.0.fetch_add(dt, Ordering::SeqCst);
            }
            Op::Latest { t, k } => {
                let t = TABLES[t];
                let got = row_tuple(eng.latest(t, &key(k)).expect("latest"));
                prop_assert_eq!(got, model.latest(t, &key(k), now), "latest t{} k{}", t, k);
            }
            Op::MultiLatest { t, ks } => {
                let t = TABLES[t];
                let keys: Vec<Vec<u8>> = ks.iter().map(|&k| key(k)).collect();
                let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
                let got: Vec<_> = eng
                    .multi_latest(t, &refs)
                    .expect("multi_latest")
                    .into_iter()
                    .map(row_tuple)
                    .collect();
                let want: Vec<_> = keys.iter().map(|k| model.latest(t, k, now)).collect();
                prop_assert_eq!(got, want);
            }
            Op::MultiLatestAcross(lookups) => {
                let lookups: Vec<(u32, Vec<u8>)> =
                    lookups.iter().map(|&(t, k)| (TABLES[t], key(k))).collect();
                let refs: Vec<(u32, &[u8])> =
                    lookups.iter().map(|(t, k)| (*t, k.as_slice())).collect();
                let got: Vec<_> = eng
                    .multi_latest_across(&refs)
                    .expect("multi_latest_across")
                    .into_iter()
                    .map(row_tuple)
                    .collect();
                let want: Vec<_> = lookups
                    .iter()
                    .map(|(t, k)| model.latest(*t, k, now))
                    .collect();
                prop_assert_eq!(&got, &want);
                let lent = eng
                    .with_latest_across(&refs, |rows| {
                        let tuple = |r: &RowRef<'_>| (r.event_ts, r.seq, r.value.to_vec());
                        rows.iter()
                            .map(|r| r.as_ref().map(tuple))
                            .collect::<Vec<_>>()
                    })
                    .expect("with_latest_across");
                prop_assert_eq!(lent, want);
            }
            Op::AsOf { t, k, at, known } => {
                let t = TABLES[t];
                let got = row_tuple(eng.as_of(t, &key(k), at, known).expect("as_of"));
                prop_assert_eq!(
                    got,
                    model.as_of(t, &key(k), at, known, now),
                    "as_of t{} k{} at {} known {:?}",
                    t,
                    k,
                    at,
                    known
                );
                let q = [AsOfQuery {
                    key: &key(k),
                    as_of: at,
                    known_at: known,
                }];
                let batch = eng.multi_as_of(t, &q).expect("multi_as_of");
                prop_assert_eq!(
                    row_tuple(batch.into_iter().next().flatten()),
                    model.as_of(t, &key(k), at, known, now)
                );
            }
            Op::History { t, k, from, to } => {
                let t = TABLES[t];
                let got = history_tuple(eng.history(t, &key(k), from, to).expect("history"));
                prop_assert_eq!(got, model.history(t, &key(k), from, to, now));
            }
            Op::BulkAsOf { t, at, known } => {
                let t = TABLES[t];
                let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
                let want: Vec<_> = keys
                    .iter()
                    .map(|k| model.as_of(t, k, at, known, now))
                    .collect();
                let mut queries: Vec<AsOfQuery<'_>> = keys
                    .iter()
                    .map(|k| AsOfQuery {
                        key: k,
                        as_of: at,
                        known_at: known,
                    })
                    .collect();
                let got: Vec<_> = eng
                    .bulk_as_of(t, &queries)
                    .expect("bulk_as_of")
                    .into_iter()
                    .map(row_tuple)
                    .collect();
                prop_assert_eq!(&got, &want, "bulk_as_of t{} at {} known {:?}", t, at, known);
                queries.reverse();
                let mut reversed: Vec<_> = eng
                    .bulk_as_of(t, &queries)
                    .expect("bulk_as_of")
                    .into_iter()
                    .map(row_tuple)
                    .collect();
                reversed.reverse();
                prop_assert_eq!(reversed, want, "bulk_as_of in reverse");
            }
            Op::ScanAsOf { t, at, known } => {
                let t = TABLES[t];
                let got: Vec<_> = eng
                    .snapshot()
                    .scan_as_of(t, at, known)
                    .map(|r| r.map(|(k, row)| (k.to_vec(), row_tuple(Some(row)))))
                    .collect::<Result<_, _>>()
                    .expect("scan_as_of");
                let want: Vec<_> = (0..KEYS)
                    .filter_map(|k| {
                        let row = model.as_of(t, &key(k), at, known, now)?;
                        Some((key(k), Some(row)))
                    })
                    .collect();
                prop_assert_eq!(got, want, "scan_as_of t{} at {} known {:?}", t, at, known);
            }
            Op::Flush => eng.flush().expect("flush"),
            Op::Compact => eng.compact().expect("compact"),
            Op::Reopen => {
                engine.take().expect("engine").close().expect("close");
                engine = Some(open(dir.path(), &clock));
            }
            Op::Crash => {
                drop(engine.take());
                engine = Some(open(dir.path(), &clock));
            }
            Op::Touch => {
                touched = !touched;
                let retention_us = touched.then_some(i64::MAX / 4);
                eng.configure_table(
                    3,
                    TableOptions {
                        ttl_us: None,
                        retention_us,
                    },
                )
                .expect("configure");
            }
        }
    }
    let eng = engine.take().expect("engine");
    eng.verify_index().expect("index agrees with a full scan");
    let now = clock.now_us();
    for t in TABLES {
        for k in 0..KEYS {
            prop_assert_eq!(
                row_tuple(eng.latest(t, &key(k)).expect("latest")),
                model.latest(t, &key(k), now)
            );
        }
    }
    eng.close().expect("close");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in prop::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
