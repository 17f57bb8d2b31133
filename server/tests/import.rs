//! Import sessions against the real server: nothing visible before commit,
//! everything after; a bad row fails the import and leaves nothing; with
//! rejection, bad rows are reported by number and the rest commits; a
//! dropped connection aborts; the concurrency cap and the rate limit hold.

mod common;

use common::{now_us, server_code as code, TestServer, DAY_US};
use std::time::{Duration, Instant};
use tessera_protocol::{
    tag, ClientError, ColumnSpec, ErrorCode, ImportBatch, ImportBegin, ImportRows, PutRow,
    SlatePart, SlateRequest, Value,
};

fn begin(reject_invalid: bool) -> ImportBegin {
    ImportBegin {
        group: "user_features".into(),
        columns: vec!["user_id".into(), "clicks_1h".into(), "ctr_24h".into()],
        reject_invalid,
        max_rows_per_s: 0,
    }
}

/// Rows in the session's columns (see [`begin`]) as one batch.
fn batch(rows: &[PutRow]) -> ImportBatch {
    let specs = [
        ("user_id", tag::INT64),
        ("clicks_1h", tag::INT64),
        ("ctr_24h", tag::FLOAT64),
    ]
    .map(|(name, tag)| ColumnSpec { name, tag, dim: 0 });
    ImportBatch::from_rows(&specs, rows).expect("a batch")
}

fn row(id: i64, event_ts: i64, clicks: i64) -> PutRow {
    PutRow {
        event_ts,
        values: vec![Value::Int64(id), Value::Int64(clicks), Value::Float64(0.5)],
    }
}

/// clicks_1h of each id, `None` where not found.
fn clicks(c: &mut tessera_protocol::Client, ids: &[i64]) -> Vec<Option<i64>> {
    let reply = c
        .get_slate(&SlateRequest {
            as_of: None,
            known_at: None,
            parts: vec![SlatePart {
                group: "user_features".into(),
                features: vec!["clicks_1h".into()],
                keys: ids.iter().map(|&id| vec![Value::Int64(id)]).collect(),
            }],
        })
        .expect("slate");
    let part = &reply.parts()[0];
    let col = part.column("clicks_1h").expect("column");
    (0..ids.len())
        .map(|i| part.found(i).then(|| col.i64_at(i)).flatten())
        .collect()
}

fn ingest_runs(server: &TestServer) -> usize {
    std::fs::read_dir(server.dir.join("data/engine/ingest")).map_or(0, |d| d.count())
}

#[test]
fn an_import_is_invisible_until_it_commits_and_never_shadows_newer_data() {
    let server = TestServer::start(None);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let t = now_us() - DAY_US;
    // User 5 has a newer online value than anything imported.
    c.put(&tessera_protocol::Put {
        group: "user_features".into(),
        columns: vec!["user_id".into(), "clicks_1h".into()],
        rows: vec![PutRow {
            event_ts: t + 10_000_000,
            values: vec![Value::Int64(5), Value::Int64(555)],
        }],
    })
    .expect("put");

    let session = c.import_begin(&begin(false)).expect("begin");
    assert!(session.max_rows_per_s > 0);
    // Three batches, unsorted, two versions per user.
    for b in 0..3i64 {
        let rows: Vec<PutRow> = (0..100)
            .rev()
            .map(|i| row(b * 100 + i, t + (i % 2), i * 10 + (i % 2)))
            .chain((0..100).map(|i| row(b * 100 + i, t - 1_000, -1)))
            .collect();
        let reply = c
            .import_rows(&ImportRows {
                session: session.session,
                first_row: b as u64 * 200,
                rows: batch(&rows),
            })
            .expect("rows");
        assert_eq!((reply.accepted, reply.rejected.len()), (200, 0));
    }
    assert_eq!(
        clicks(&mut c, &[1, 250]),
        [None, None],
        "nothing visible before commit"
    );
    let committed = c.import_commit(session.session).expect("commit");
    assert_eq!(committed.rows, 600);
    assert_eq!(
        clicks(&mut c, &[1, 250, 5]),
        [Some(11), Some(500), Some(555)]
    );
    assert_eq!(ingest_runs(&server), 0, "no runs left behind");
}

#[test]
fn a_bad_row_fails_the_import_and_leaves_nothing() {
    let server = TestServer::start(None);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let t = now_us() - DAY_US;
    let session = c.import_begin(&begin(false)).expect("begin").session;
    let good: Vec<PutRow> = (0..50).map(|i| row(i, t, i)).collect();
    c.import_rows(&ImportRows {
        session,
        first_row: 0,
        rows: batch(&good),
    })
    .expect("rows");
    let mut bad: Vec<PutRow> = (50..100).map(|i| row(i, t, i)).collect();
    bad[7].values[0] = Value::Null;
    let err = c
        .import_rows(&ImportRows {
            session,
            first_row: 50,
            rows: batch(&bad),
        })
        .unwrap_err();
    let ClientError::Server(body) = err else {
        panic!("expected a server error")
    };
    assert_eq!(body.code, ErrorCode::Validation);
    assert!(
        body.message.contains("row 57") && body.message.contains("user_id"),
        "{}",
        body.message
    );
    // The session is gone; nothing was committed.
    assert_eq!(
        code(c.import_commit(session).unwrap_err()),
        ErrorCode::BadRequest
    );
    assert_eq!(clicks(&mut c, &[1, 60]), [None, None]);
    assert_eq!(ingest_runs(&server), 0);
}

#[test]
fn with_rejection_bad_rows_are_reported_and_the_rest_commits() {
    let server = TestServer::start(None);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let t = now_us() - DAY_US;
    let session = c.import_begin(&begin(true)).expect("begin").session;
    let mut rows: Vec<PutRow> = (0..10).map(|i| row(i, t, i)).collect();
    rows[3].values[2] = Value::Float64(f64::NAN);
    rows[8].values[0] = Value::Null;
    let reply = c
        .import_rows(&ImportRows {
            session,
            first_row: 1000,
            rows: batch(&rows),
        })
        .expect("rows");
    assert_eq!(reply.accepted, 8);
    let rejected: Vec<u64> = reply.rejected.iter().map(|r| r.row).collect();
    assert_eq!(rejected, [1003, 1008]);
    assert!(
        reply.rejected[0].reason.contains("ctr_24h"),
        "{}",
        reply.rejected[0].reason
    );
    c.import_commit(session).expect("commit");
    assert_eq!(clicks(&mut c, &[2, 3, 9]), [Some(2), None, Some(9)]);
}

#[test]
fn a_dropped_connection_aborts_its_import() {
    let server = TestServer::start(Some("max_concurrent_imports = 1\n"));
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let t = now_us() - DAY_US;
    {
        let mut importer = server.client();
        let session = importer.import_begin(&begin(false)).expect("begin").session;
        let rows: Vec<PutRow> = (0..20_000).map(|i| row(i, t, i)).collect();
        importer
            .import_rows(&ImportRows {
                session,
                first_row: 0,
                rows: batch(&rows),
            })
            .expect("rows");
        // The cap: a second import is refused while this one is open.
        assert_eq!(
            code(c.import_begin(&begin(false)).unwrap_err()),
            ErrorCode::Unavailable
        );
    }
    // The slot is freed once the server sees the close.
    let mut again = None;
    for _ in 0..100 {
        match c.import_begin(&begin(false)) {
            Ok(s) => {
                again = Some(s.session);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let session = again.expect("the dropped import's slot was never freed");
    c.import_abort(session).expect("abort");
    assert_eq!(clicks(&mut c, &[1, 19_999]), [None, None]);
    assert_eq!(ingest_runs(&server), 0);
}

#[test]
fn the_server_holds_imports_to_its_rate() {
    let server = TestServer::start(Some("import_max_rows_per_s = 2000\n"));
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let t = now_us() - DAY_US;
    let begun = c
        .import_begin(&ImportBegin {
            max_rows_per_s: 1_000_000,
            ..begin(false)
        })
        .expect("begin");
    assert_eq!(
        begun.max_rows_per_s, 2000,
        "the server's cap wins over a faster request"
    );
    let start = Instant::now();
    for b in 0..3 {
        let rows: Vec<PutRow> = (0..1000).map(|i| row(b * 1000 + i, t, i)).collect();
        c.import_rows(&ImportRows {
            session: begun.session,
            first_row: 0,
            rows: batch(&rows),
        })
        .expect("rows");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "3,000 rows at 2,000/s took {:?}",
        start.elapsed()
    );
    c.import_commit(begun.session).expect("commit");
}

#[test]
fn an_import_killed_halfway_leaves_nothing_after_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = "import_sort_mib = 1\n";
    let mut server = TestServer::start_in(tmp.path(), Some(config), &[]);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let t = now_us() - DAY_US;
    let session = c.import_begin(&begin(false)).expect("begin").session;
    for b in 0..4 {
        let rows: Vec<PutRow> = (0..10_000).map(|i| row(b * 10_000 + i, t, i)).collect();
        c.import_rows(&ImportRows {
            session,
            first_row: 0,
            rows: batch(&rows),
        })
        .expect("rows");
    }
    assert!(
        ingest_runs(&server) > 0,
        "the import spilled sorted runs before the kill"
    );
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("wait");
    drop(server);

    let server = TestServer::start_in(tmp.path(), Some(config), &[]);
    let mut c = server.client();
    assert_eq!(ingest_runs(&server), 0, "no stray runs after restart");
    assert_eq!(
        clicks(&mut c, &[1, 39_999]),
        [None, None],
        "nothing of the import is visible"
    );
    // The engine is healthy: a new import commits.
    let session = c.import_begin(&begin(false)).expect("begin").session;
    c.import_rows(&ImportRows {
        session,
        first_row: 0,
        rows: batch(&[row(1, t, 7)]),
    })
    .expect("rows");
    c.import_commit(session).expect("commit");
    assert_eq!(clicks(&mut c, &[1]), [Some(7)]);
}
