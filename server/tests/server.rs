//! Integration tests of `tessera serve`: the real binary on a loopback
//! port, driven by the Rust client and by raw sockets.

mod common;

use common::{hello_frame, now_us, server_code, TestServer, DAY_US};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tessera_protocol::{
    encode_request, Delete, ErrorCode, FrameHeader, Put, PutRow, Request, SlatePart, SlateRequest,
    Value, DEFAULT_MAX_FRAME_BYTES, HEADER_LEN, MAGIC,
};

/// A `user_features` put of `ids`, with clicks_1h = id * 10 + version.
fn user_put(ids: &[i64], event_ts: i64, version: i64) -> Put {
    Put {
        group: "user_features".into(),
        columns: vec![
            "user_id".into(),
            "clicks_1h".into(),
            "ctr_24h".into(),
            "user_embedding".into(),
            "home_country".into(),
        ],
        rows: ids
            .iter()
            .map(|&id| PutRow {
                event_ts,
                values: vec![
                    Value::Int64(id),
                    Value::Int64(id * 10 + version),
                    Value::Float64(id as f64 / 100.0),
                    Value::Embedding(vec![id as f32; 64]),
                    Value::String(format!("c{id}")),
                ],
            })
            .collect(),
    }
}

fn slate_of(
    ids: &[i64],
    features: &[&str],
    as_of: Option<i64>,
    known_at: Option<i64>,
) -> SlateRequest {
    SlateRequest {
        as_of,
        known_at,
        parts: vec![SlatePart {
            group: "user_features".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            keys: ids.iter().map(|&id| vec![Value::Int64(id)]).collect(),
        }],
    }
}

#[test]
fn registry_apply_then_put_and_slates_latest_as_of_and_known_at() {
    let server = TestServer::start(None);
    let mut c = server.client();
    let version = server.apply_news_feed(&mut c);
    assert!(version >= 1);
    let (_, json) = c.registry_get().expect("registry");
    assert!(json.contains("user_features") && json.contains("article_features"));

    let t = now_us() - DAY_US;
    let first = c.put(&user_put(&[1, 2, 3], t, 1)).expect("put v1");
    let second = c.put(&user_put(&[1, 2], t + 1_000_000, 2)).expect("put v2");
    assert!(second.seq > first.seq);

    let features = [
        "clicks_1h",
        "ctr_24h",
        "user_embedding",
        "home_country",
        "clicks_7d",
    ];
    let reply = c
        .get_slate(&slate_of(&[1, 2, 3, 4], &features, None, None))
        .expect("slate");
    let part = &reply.parts()[0];
    assert_eq!(part.rows(), 4);
    assert_eq!(
        (0..4).map(|i| part.found(i)).collect::<Vec<_>>(),
        [true, true, true, false]
    );
    let clicks = part.column("clicks_1h").expect("clicks");
    assert_eq!(clicks.i64_at(0), Some(12));
    assert_eq!(clicks.i64_at(2), Some(31));
    assert!(!clicks.is_valid(3));
    assert_eq!(part.event_ts(0), t + 1_000_000);
    let emb = part.column("user_embedding").expect("embedding");
    assert_eq!(emb.dim(), 64);
    assert_eq!(emb.value(1), Value::Embedding(vec![2.0; 64]));
    assert_eq!(
        part.column("home_country").and_then(|c| c.str_at(2)),
        Some("c3")
    );
    // A feature never written reads as null.
    assert!(!part.column("clicks_7d").expect("clicks_7d").is_valid(0));

    // As of the first version's time: version 1.
    let reply = c
        .get_slate(&slate_of(&[1], &["clicks_1h"], Some(t), None))
        .expect("as_of");
    assert_eq!(
        reply.parts()[0]
            .column("clicks_1h")
            .and_then(|c| c.i64_at(0)),
        Some(11)
    );
    // Known at the first commit: the second put was not yet known.
    let reply = c
        .get_slate(&slate_of(&[1], &["clicks_1h"], None, Some(first.ingest_ts)))
        .expect("known_at");
    assert_eq!(
        reply.parts()[0]
            .column("clicks_1h")
            .and_then(|c| c.i64_at(0)),
        Some(11)
    );

    // A tombstone hides the key from then on.
    c.delete(&Delete {
        group: "user_features".into(),
        keys: vec![(t + 2_000_000, vec![Value::Int64(3)])],
    })
    .expect("delete");
    let reply = c
        .get_slate(&slate_of(&[3], &["clicks_1h"], None, None))
        .expect("slate");
    assert!(!reply.parts()[0].found(0));

    // History: newest first, the tombstone included.
    let h = c
        .history(&tessera_protocol::HistoryRequest {
            group: "user_features".into(),
            key: vec![Value::Int64(3)],
            from: i64::MIN,
            to: i64::MAX,
            features: vec!["clicks_1h".into()],
        })
        .expect("history");
    assert_eq!(h.rows(), 2);
    assert!(h.tombstone(0) && !h.tombstone(1));

    // Unknown groups and features, and mistyped rows, are errors; the
    // connection stays usable.
    let bad = c.get_slate(&SlateRequest {
        as_of: None,
        known_at: None,
        parts: vec![SlatePart {
            group: "nope".into(),
            features: vec![],
            keys: vec![],
        }],
    });
    assert_eq!(server_code(bad.unwrap_err()), ErrorCode::UnknownGroup);
    let bad = c.get_slate(&slate_of(&[1], &["nope"], None, None));
    assert_eq!(server_code(bad.unwrap_err()), ErrorCode::UnknownFeature);
    let mut wrong = user_put(&[9], t, 1);
    wrong.rows[0].values[1] = Value::String("ten".into());
    assert_eq!(
        server_code(c.put(&wrong).unwrap_err()),
        ErrorCode::Validation
    );
    let reply = c
        .get_slate(&slate_of(&[9], &["clicks_1h"], None, None))
        .expect("slate");
    assert!(!reply.parts()[0].found(0), "a rejected batch wrote nothing");
    assert_eq!(c.ping(b"still here").expect("ping"), b"still here");
    let stats: serde_json::Value = serde_json::from_str(&c.stats().expect("stats")).expect("json");
    assert!(stats["block_cache_hits"].is_number(), "{stats}");
    assert!(
        stats["server"]["requests_total"]["GET_SLATE"].as_f64() >= Some(1.0),
        "{stats}"
    );
    assert!(
        stats["server"]["connections_open"].as_f64() >= Some(1.0),
        "{stats}"
    );
}

#[test]
fn a_thousand_pipelined_requests_on_one_connection() {
    let server = TestServer::start(None);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    c.put(&user_put(
        &(0..100).collect::<Vec<_>>(),
        now_us() - DAY_US,
        1,
    ))
    .expect("put");
    let requests: Vec<Request> = (0..1000)
        .map(|i| match i % 2 {
            0 => Request::Ping(format!("{i}").into_bytes()),
            _ => Request::GetSlate(slate_of(&[i % 100], &["clicks_1h"], None, None)),
        })
        .collect();
    let replies = c.pipeline(&requests).expect("pipeline");
    assert_eq!(replies.len(), 1000);
    for (i, reply) in replies.into_iter().enumerate() {
        match reply.expect("reply") {
            tessera_protocol::Reply::Ping(p) => assert_eq!(p, format!("{i}").into_bytes()),
            tessera_protocol::Reply::GetSlate(s) => {
                let id = i as i64 % 100;
                let got = s.parts()[0].column("clicks_1h").and_then(|c| c.i64_at(0));
                assert_eq!(got, Some(id * 10 + 1));
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

#[test]
fn a_thousand_idle_connections_while_another_client_is_served() {
    let server = TestServer::start(None);
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(server.addr).expect("connect idle"))
        .collect();
    let mut c = server.client();
    for i in 0..100u32 {
        assert_eq!(c.ping(&i.to_le_bytes()).expect("ping"), i.to_le_bytes());
    }
    assert_eq!(idle.len(), 1000);
    drop(idle);
}

/// Sends raw bytes on a fresh connection and returns what comes back
/// before the server closes it (or the read times out).
fn raw_exchange(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The error code of the first frame in `bytes`.
fn first_error(bytes: &[u8]) -> Option<ErrorCode> {
    let header: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let h = FrameHeader::decode(header, DEFAULT_MAX_FRAME_BYTES).ok()?;
    if h.flags & tessera_protocol::flags::ERROR == 0 {
        return None;
    }
    let code = u16::from_le_bytes(bytes.get(HEADER_LEN..HEADER_LEN + 2)?.try_into().ok()?);
    ErrorCode::from_u16(code)
}

/// Frames after the first (the HELLO reply) in `bytes`.
fn after_first(bytes: &[u8]) -> &[u8] {
    let len = bytes
        .get(16..20)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .unwrap_or(0);
    bytes.get(HEADER_LEN + len..).unwrap_or(&[])
}

#[test]
fn every_kind_of_bad_frame_gets_an_error_and_the_server_keeps_serving() {
    let server = TestServer::start(None);
    let good = hello_frame();

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(
        first_error(&raw_exchange(&server, &bad_magic)),
        Some(ErrorCode::BadFrame)
    );

    let mut bad_version = good.clone();
    bad_version[4] = 9;
    assert_eq!(
        first_error(&raw_exchange(&server, &bad_version)),
        Some(ErrorCode::UnsupportedVersion)
    );

    let mut huge = good.clone();
    huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        first_error(&raw_exchange(&server, &huge)),
        Some(ErrorCode::FrameTooLarge)
    );

    let mut reserved = good.clone();
    reserved[20] = 1;
    assert_eq!(
        first_error(&raw_exchange(&server, &reserved)),
        Some(ErrorCode::BadFrame)
    );

    // A truncated frame then a close: nothing to answer, no crash.
    let _ = raw_exchange(&server, &good[..good.len() - 3]);
    let _ = raw_exchange(&server, &MAGIC);

    // Before HELLO.
    let mut ping = Vec::new();
    encode_request(2, &Request::Ping(vec![1]), &mut ping).expect("encode");
    assert_eq!(
        first_error(&raw_exchange(&server, &ping)),
        Some(ErrorCode::AuthRequired)
    );

    // After HELLO: an unknown opcode and a body that does not decode get
    // errors and the connection stays open for the PING behind them.
    let mut unknown = good.clone();
    unknown[5] = 0x7f;
    unknown[8..16].copy_from_slice(&7u64.to_le_bytes());
    let mut garbage = ping.clone();
    garbage[5] = 0x30; // GET_SLATE with a PING's body
    let mut stream = good.clone();
    stream.extend_from_slice(&unknown);
    stream.extend_from_slice(&garbage);
    stream.extend_from_slice(&ping);
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(&stream).expect("write");
    let mut got = vec![0u8; 4096];
    let mut filled = 0;
    // HELLO reply, two errors, one PING reply.
    let mut frames = 0;
    while frames < 4 {
        let n = s.read(&mut got[filled..]).expect("read");
        assert!(n > 0, "the server closed the connection");
        filled += n;
        frames = count_frames(&got[..filled]);
    }
    let rest = after_first(&got[..filled]);
    assert_eq!(first_error(rest), Some(ErrorCode::UnknownOpcode));
    assert_eq!(first_error(after_first(rest)), Some(ErrorCode::BadRequest));

    // Random bytes.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = raw_exchange(&server, &noise);

    // Still serving.
    assert_eq!(server.client().ping(b"ok").expect("ping"), b"ok");
}

fn count_frames(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while bytes.len() >= HEADER_LEN {
        let len = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
        if bytes.len() < HEADER_LEN + len {
            break;
        }
        bytes = &bytes[HEADER_LEN + len..];
        n += 1;
    }
    n
}

const TOKENS: &str = r#"
[[tokens]]
token = "reader-secret"
role = "read"
identity = "ranker"

[[tokens]]
token = "writer-secret"
role = "write"
identity = "pipeline"

[[tokens]]
token = "admin-secret"
role = "admin"
identity = "ops"
"#;

#[test]
fn auth_roles() {
    let server = TestServer::start(Some(TOKENS));
    let opts = |token: &str| tessera_protocol::ClientOptions {
        token: token.into(),
        ..Default::default()
    };
    // A wrong token is refused.
    let err = tessera_protocol::Client::connect(server.addr, opts("guess")).unwrap_err();
    assert_eq!(server_code(err), ErrorCode::AuthFailed);

    let mut admin = server.client_with("admin-secret");
    assert_eq!(admin.identity(), "ops");
    server.apply_news_feed(&mut admin);

    let mut reader = server.client_with("reader-secret");
    let t = now_us() - DAY_US;
    let denied = reader.put(&user_put(&[1], t, 1)).unwrap_err();
    assert_eq!(server_code(denied), ErrorCode::PermissionDenied);
    // The connection stays open.
    assert!(reader
        .get_slate(&slate_of(&[1], &["clicks_1h"], None, None))
        .is_ok());

    let mut writer = server.client_with("writer-secret");
    writer.put(&user_put(&[1], t, 1)).expect("writer puts");
    let text = std::fs::read_to_string(common::NEWS_FEED_SPEC).expect("spec");
    let files = vec![tessera_protocol::SpecFile {
        name: "registry.toml".into(),
        text,
    }];
    let denied = writer.registry_apply(1, files).unwrap_err();
    assert_eq!(server_code(denied), ErrorCode::PermissionDenied);
    let (_, hist) = (0, admin.registry_history(0).expect("history"));
    assert_eq!(hist[0].identity, "ops");
}

#[test]
fn graceful_shutdown_loses_no_acknowledged_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(tmp.path(), None, &["--durability", "sync"]);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let t = now_us() - DAY_US;
    let addr = server.addr;
    // Writers keep writing while the server is told to stop.
    let writers: Vec<_> = (0..4i64)
        .map(|w| {
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let opts = tessera_protocol::ClientOptions::default();
                let Ok(mut c) = tessera_protocol::Client::connect(addr, opts) else {
                    return acked;
                };
                for i in 0..10_000i64 {
                    let id = w * 1_000_000 + i;
                    match c.put(&user_put(&[id], t, 1)) {
                        Ok(_) => acked.push(id),
                        Err(_) => break,
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let status = server.terminate();
    assert!(status.success(), "tessera exited with {status}");
    let acked: Vec<i64> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before shutdown"
    );

    let server = TestServer::start_in(tmp.path(), None, &[]);
    let mut c = server.client();
    for chunk in acked.chunks(1000) {
        let reply = c
            .get_slate(&slate_of(chunk, &["clicks_1h"], None, None))
            .expect("slate");
        let part = &reply.parts()[0];
        for (i, id) in chunk.iter().enumerate() {
            assert!(part.found(i), "acknowledged write of user {id} lost");
        }
    }
}

#[test]
fn metrics_and_health_over_http() {
    let server = TestServer::start(None);
    let mut c = server.client();
    c.ping(b"x").expect("ping");
    let addr = server.metrics.expect("metrics address");
    let get = |path: &str| {
        let mut s = TcpStream::connect(addr).expect("connect");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    let health = get("/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = get("/metrics");
    for name in [
        "tessera_requests_total{op=\"PING\"} 1",
        "tessera_request_duration_seconds_bucket",
        "tessera_connections_open",
        "tessera_bytes_in_total",
        "tessera_engine_memtable_bytes",
        "tessera_engine_ssts",
        "tessera_engine_block_cache_hits_total",
        "tessera_engine_wal_fsyncs_total",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
    assert!(get("/nope").starts_with("HTTP/1.1 404"));
    // The engine's totals are counters, not gauges.
    assert!(
        metrics.contains("# TYPE tessera_engine_block_cache_hits_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE tessera_engine_wal_fsyncs_total counter"),
        "{metrics}"
    );
}

#[test]
fn a_client_that_never_reads_cannot_grow_the_servers_memory() {
    let server = TestServer::start(None);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let ids: Vec<i64> = (0..200).collect();
    c.put(&user_put(&ids, now_us() - DAY_US, 1)).expect("put");
    let before = server.status_kib("VmRSS");

    // One slate of 200 users with embeddings: a ~60 KB reply. Send 4,000
    // of them (~240 MB of replies) and never read.
    let mut request = Vec::new();
    let slate = Request::GetSlate(slate_of(&ids, &["user_embedding", "clicks_1h"], None, None));
    for i in 0..4000 {
        encode_request(i + 2, &slate, &mut request).expect("encode");
    }
    let mut hog = TcpStream::connect(server.addr).expect("connect");
    hog.write_all(&hello_frame()).expect("hello");
    hog.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    // The server stops reading once its replies back up, so this write
    // stalls; what matters is that it does not buffer without bound.
    let _ = hog.write_all(&request);
    std::thread::sleep(Duration::from_millis(500));
    let during = server.status_kib("VmRSS");
    // Others are still served meanwhile.
    let reply = c
        .get_slate(&slate_of(&[1], &["clicks_1h"], None, None))
        .expect("slate");
    assert!(reply.parts()[0].found(0));
    assert!(
        during < before + 64 * 1024,
        "server RSS grew from {before} KiB to {during} KiB under a client that never reads"
    );
    drop(hog);
}

#[test]
fn the_connection_limit_refuses_with_unavailable() {
    let server = TestServer::start(Some("max_connections = 2\n"));
    let a = server.client();
    let b = server.client();
    let opts = tessera_protocol::ClientOptions {
        reconnect: false,
        ..Default::default()
    };
    let err = tessera_protocol::Client::connect(server.addr, opts).unwrap_err();
    assert_eq!(server_code(err), ErrorCode::Unavailable);
    drop(a);
    // Once one leaves, a new connection is accepted.
    let mut accepted = None;
    for _ in 0..50 {
        if let Ok(c) = tessera_protocol::Client::connect(server.addr, Default::default()) {
            accepted = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(accepted.is_some(), "a freed slot was never reused");
    drop(b);
}

#[test]
fn idle_connections_are_closed_and_late_requests_miss_their_deadline() {
    let server = TestServer::start(Some("idle_timeout_s = 1\n"));
    let mut idle = TcpStream::connect(server.addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 1];
    let started = std::time::Instant::now();
    assert_eq!(idle.read(&mut buf).expect("closed, not timed out"), 0);
    assert!(started.elapsed() < Duration::from_secs(5));

    // A deadline of zero: every request has waited past it.
    let server = TestServer::start(Some("request_deadline_ms = 0\n"));
    let mut c = server.client();
    assert_eq!(
        server_code(c.ping(b"x").unwrap_err()),
        ErrorCode::DeadlineExceeded
    );
}

#[test]
fn a_remote_address_without_tokens_is_refused_at_startup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--no-metrics",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .output()
        .expect("run tessera");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without auth") && err.contains("--allow-insecure-remote"),
        "{err}"
    );
    assert!(!tmp.path().join("data").exists(), "nothing was created");
}

/// Mappings of the server that the kernel may back with transparent huge
/// pages.
fn thp_eligible_mappings(server: &TestServer) -> usize {
    let smaps =
        std::fs::read_to_string(format!("/proc/{}/smaps", server.child.id())).expect("smaps");
    smaps
        .lines()
        .filter_map(|l| l.strip_prefix("THPeligible:"))
        .filter(|v| v.trim() == "1")
        .count()
}

#[test]
fn the_server_runs_without_transparent_huge_pages_unless_asked() {
    let plain = TestServer::start(None);
    assert_eq!(thp_eligible_mappings(&plain), 0);
    drop(plain);
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") {
        return; // the kernel offers none to ask for
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let asked = TestServer::start_in(tmp.path(), None, &["--huge-pages"]);
    assert!(thp_eligible_mappings(&asked) > 0);
}

/// The nice values of the server's `tessera-bulk` threads.
fn bulk_thread_nice_values(server: &TestServer) -> Vec<i64> {
    let tasks = format!("/proc/{}/task", server.child.id());
    let mut nice = Vec::new();
    for task in std::fs::read_dir(tasks).expect("tasks").flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread has just exited
        };
        // `tid (comm) state ...`: the nice value is the 19th field, the
        // 17th after the command's closing parenthesis.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if head.ends_with("(tessera-bulk") {
            let field = rest.split_whitespace().nth(16).expect("nice field");
            nice.push(field.parse().expect("nice value"));
        }
    }
    nice
}

#[test]
fn writes_run_write_niceness_levels_below_reads() {
    let server = TestServer::start(Some("write_niceness = 7\nbulk_niceness = 12\n"));
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    assert!(bulk_thread_nice_values(&server).is_empty());
    c.put(&user_put(&[1, 2], now_us(), 1)).expect("put");
    // The thread that ran the write waits for the next one: still there.
    assert_eq!(bulk_thread_nice_values(&server), vec![7]);
    let reply = c
        .get_slate(&slate_of(&[1, 2], &["clicks_1h"], None, None))
        .expect("slate");
    let clicks = reply.parts()[0].column("clicks_1h").expect("clicks");
    assert_eq!((clicks.i64_at(0), clicks.i64_at(1)), (Some(11), Some(21)));
}
