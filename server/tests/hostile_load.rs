//! Hostile clients against the real server, briefly: random bytes, huge
//! length prefixes, half-open connections, slowloris at one byte a second,
//! 5,000 connections (past the connection limit), a pipelining flood and
//! clients that never read. Throughout, a victim keeps sending slates and
//! pings on its own connection; the test asserts the victim never fails,
//! the server's RSS stays under a bound, dangling connections are closed by
//! the server's deadlines, a fresh client is answered after each attack,
//! and the server's stderr never says "panicked". (Latency is measured by
//! `tessera-bench hostile`, not asserted here: the machine is shared.)

mod common;

use common::{hello_frame, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_protocol::{
    encode_request, flags, ErrorCode, FrameHeader, Opcode, Put, PutRow, Request, SlatePart,
    SlateRequest, Value, HEADER_LEN,
};

/// The server's idle timeout in this test; it also caps the HELLO and
/// frame deadlines, so dangling connections go within it.
const IDLE_S: u64 = 3;
/// Its connection limit: the 5,000-connection attack goes past it.
const MAX_CONNECTIONS: usize = 4_000;
const FLOOD: usize = 5_000;
/// The bound on the server's RSS at any time during the attacks. Before
/// bodies were read as they arrive, the 100 huge-length headers alone made
/// it allocate 1.6 GB.
const RSS_BOUND_KIB: u64 = 768 * 1024;
const USERS: i64 = 100;
const ARTICLES: i64 = 100;

fn slate(rng: &mut StdRng) -> SlateRequest {
    SlateRequest {
        as_of: None,
        known_at: None,
        parts: vec![
            SlatePart {
                group: "user_features".into(),
                features: vec![],
                keys: vec![vec![Value::Int64(rng.gen_range(0..USERS))]],
            },
            SlatePart {
                group: "article_features".into(),
                features: vec![],
                keys: (0..50)
                    .map(|_| vec![Value::Int64(rng.gen_range(0..ARTICLES))])
                    .collect(),
            },
        ],
    }
}

fn connect(server: &TestServer) -> TcpStream {
    let s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// Reads one frame: (flags, first two body bytes as an error code).
fn read_frame(s: &mut TcpStream) -> std::io::Result<(u16, u16, Vec<u8>)> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h)?;
    let header = FrameHeader::decode(&h, 64 << 20)
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e.to_string()))?;
    let mut body = vec![0u8; header.body_len as usize];
    s.read_exact(&mut body)?;
    let code = body
        .get(..2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    Ok((header.flags, code, body))
}

/// A connection that said HELLO and got its reply.
fn said_hello(server: &TestServer) -> TcpStream {
    let mut s = connect(server);
    s.write_all(&hello_frame()).expect("hello");
    let (f, _, _) = read_frame(&mut s).expect("hello reply");
    assert_eq!(f & flags::ERROR, 0, "HELLO refused");
    s
}

/// Whether the server has closed `s` (non-blocking; drains what it sent).
fn closed_by_server(s: &mut TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut sink = [0u8; 4096];
    loop {
        match s.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// Waits up to `within` for the server to close every stream.
fn all_closed(streams: &mut Vec<TcpStream>, within: Duration) -> usize {
    let start = Instant::now();
    while !streams.is_empty() && start.elapsed() < within {
        streams.retain_mut(|s| !closed_by_server(s));
        std::thread::sleep(Duration::from_millis(100));
    }
    streams.len()
}

/// Samples the server's RSS every 20 ms; keeps the peak.
struct Rss {
    peak: AtomicU64,
    stop: AtomicBool,
}

/// A fresh client is answered, and the process is still there.
fn assert_answers(server: &TestServer, after: &str) {
    let mut c = server.client();
    assert_eq!(c.ping(b"ok").expect(after), b"ok", "{after}");
    let mut rng = StdRng::seed_from_u64(1);
    c.get_slate(&slate(&mut rng)).expect(after);
}

fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit and setrlimit read and write the struct passed.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur
    }
}

#[test]
fn hostile_clients_leave_the_server_bounded_alive_and_serving_others() {
    let fd_limit = raise_fd_limit();
    let tmp = tempfile::tempdir().expect("tempdir");
    let log_path = tmp.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let config = format!("idle_timeout_s = {IDLE_S}\nmax_connections = {MAX_CONNECTIONS}\n");
    let server = Arc::new(TestServer::start_with_stderr(
        "127.0.0.1:0",
        tmp.path(),
        Some(&config),
        &[],
        log.into(),
    ));
    let mut admin = server.client();
    server.apply_news_feed(&mut admin);
    for (group, key, n) in [
        ("user_features", "user_id", USERS),
        ("article_features", "article_id", ARTICLES),
    ] {
        let rows = (0..n)
            .map(|i| PutRow {
                event_ts: common::now_us() - 1_000_000,
                values: vec![Value::Int64(i)],
            })
            .collect();
        let put = Put {
            group: group.into(),
            columns: vec![key.into()],
            rows,
        };
        admin.put(&put).expect("put");
    }
    drop(admin);

    // The victim: slates and pings on one connection for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let victim = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = server.client();
            let mut rng = StdRng::seed_from_u64(2);
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let reply = c.get_slate(&slate(&mut rng)).expect("victim slate");
                assert_eq!(reply.parts().len(), 2);
                assert_eq!(c.ping(b"v").expect("victim ping"), b"v");
                done += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            done
        })
    };
    let rss = Arc::new(Rss {
        peak: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let sampler = {
        let (rss, pid) = (rss.clone(), server.child.id());
        std::thread::spawn(move || {
            while !rss.stop.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                let kib = status.ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                });
                rss.peak.fetch_max(kib.unwrap_or(0), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let hello = hello_frame();
    let mut rng = StdRng::seed_from_u64(3);

    // 1. Random bytes: raw noise, and after HELLO valid headers with random
    // opcodes and bodies.
    for i in 0..60 {
        let mut s = if i % 2 == 0 {
            said_hello(&server)
        } else {
            connect(&server)
        };
        for _ in 0..10 {
            let mut chunk = Vec::new();
            if i % 2 == 0 && rng.gen_bool(0.9) {
                let len = rng.gen_range(0..2048usize);
                let h = FrameHeader {
                    opcode: rng.gen(),
                    flags: 0,
                    request_id: rng.gen(),
                    body_len: len as u32,
                };
                chunk.extend_from_slice(&h.encode());
                chunk.extend((0..len).map(|_| rng.gen::<u8>()));
            } else {
                chunk.extend((0..rng.gen_range(1..4096)).map(|_| rng.gen::<u8>()));
            }
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
    }
    assert_answers(&server, "after random bytes");

    // 2-4. Dangling connections, all at once: huge length prefixes,
    // half-open connections and slowloris; the server's deadlines must
    // close every one within its idle timeout (plus slack).
    let mut dangling = Vec::new();
    let max_frame = 16 << 20;
    for i in 0..100u32 {
        let (mut s, len) = match i % 10 {
            0 => (said_hello(&server), u32::MAX),
            9 => (connect(&server), 1 << 20),
            _ => (said_hello(&server), max_frame - HEADER_LEN as u32),
        };
        let mut f = FrameHeader {
            opcode: Opcode::Put as u8,
            flags: 0,
            request_id: 1,
            body_len: len,
        }
        .encode()
        .to_vec();
        f.extend_from_slice(&[0u8; 1024]);
        s.write_all(&f).expect("huge header");
        dangling.push(s);
    }
    for i in 0..100 {
        let mut s = match i % 5 {
            2 | 4 => said_hello(&server),
            _ => connect(&server),
        };
        match i % 5 {
            1 | 2 => s.write_all(&hello[..10]).expect("half a header"),
            3 | 4 => s.shutdown(Shutdown::Write).expect("shutdown"),
            _ => {}
        }
        dangling.push(s);
    }
    let mut slow: Vec<TcpStream> = (0..50).map(|_| connect(&server)).collect();
    let slow_started = Instant::now();
    let mut at = 0;
    while slow_started.elapsed() < Duration::from_secs(IDLE_S + 2) {
        slow.retain_mut(|s| s.write_all(&hello[at..=at]).is_ok() && !closed_by_server(s));
        at += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    let kib = rss.peak.load(Ordering::Relaxed);
    assert!(kib < RSS_BOUND_KIB, "RSS {kib} KiB with huge headers held");
    assert_eq!(slow.len(), 0, "slowloris connections still open");
    let left = all_closed(&mut dangling, Duration::from_secs(IDLE_S + 3));
    assert_eq!(left, 0, "dangling connections the server kept");
    assert_answers(&server, "after dangling connections");

    // 5. 5,000 connections, past the limit of 4,000: the rest are refused
    // with UNAVAILABLE, and the victim goes on.
    let flood = FLOOD.min(fd_limit.saturating_sub(200) as usize);
    let mut streams = Vec::with_capacity(flood);
    for _ in 0..flood {
        let mut s = connect(&server);
        let _ = s.write_all(&hello);
        streams.push(s);
    }
    let (mut accepted, mut unavailable, mut other) = (0, 0, 0);
    for s in &mut streams {
        match read_frame(s) {
            Ok((f, _, _)) if f & flags::ERROR == 0 => accepted += 1,
            Ok((_, code, _)) if code == ErrorCode::Unavailable as u16 => unavailable += 1,
            _ => other += 1,
        }
    }
    assert!(
        accepted >= MAX_CONNECTIONS.min(flood) - 10 && accepted <= MAX_CONNECTIONS,
        "{accepted} accepted"
    );
    assert_eq!(other, 0, "{other} connections neither accepted nor refused");
    assert_eq!(accepted + unavailable, flood);
    let kib = rss.peak.load(Ordering::Relaxed);
    assert!(
        kib < RSS_BOUND_KIB,
        "RSS {kib} KiB with {accepted} connections"
    );
    drop(streams);
    std::thread::sleep(Duration::from_millis(500));
    assert_answers(&server, "after 5,000 connections");

    // 6. A pipelining flood: 4,000 requests written without waiting.
    let mut s = said_hello(&server);
    let mut burst = Vec::new();
    for id in 0..4_000u64 {
        let request = if id % 2 == 0 {
            Request::GetSlate(slate(&mut rng))
        } else {
            Request::Ping(b"flood".to_vec())
        };
        encode_request(id, &request, &mut burst).expect("encode");
    }
    let mut reader = s.try_clone().expect("clone");
    let counter = std::thread::spawn(move || {
        (0..4_000)
            .map(|_| read_frame(&mut reader).map(|(f, _, _)| f & flags::ERROR == 0))
            .filter(|ok| matches!(ok, Ok(true)))
            .count()
    });
    s.write_all(&burst).expect("flood");
    assert_eq!(counter.join().expect("reader"), 4_000, "flood replies");
    drop(s);
    assert_answers(&server, "after a pipelining flood");

    // 7. Clients that never read their replies: the server stops reading
    // them once their replies back up; its memory stays flat.
    let mut stalled: Vec<TcpStream> = (0..20).map(|_| said_hello(&server)).collect();
    let mut frames = Vec::new();
    for id in 0..64 {
        encode_request(id, &Request::GetSlate(slate(&mut rng)), &mut frames).expect("encode");
    }
    let until = Instant::now() + Duration::from_secs(2);
    for s in &mut stalled {
        s.set_nonblocking(true).expect("nonblocking");
    }
    while Instant::now() < until {
        for s in &mut stalled {
            let _ = s.write(&frames);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let kib = rss.peak.load(Ordering::Relaxed);
    assert!(kib < RSS_BOUND_KIB, "RSS {kib} KiB with stalled readers");
    drop(stalled);
    assert_answers(&server, "after clients that never read");

    stop.store(true, Ordering::Relaxed);
    let victim_requests = victim.join().expect("the victim never failed");
    rss.stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert!(victim_requests > 0);
    let peak = rss.peak.load(Ordering::Relaxed);
    eprintln!(
        "hostile load: {:.1} s, victim {victim_requests} slates, peak RSS {} MiB",
        started.elapsed().as_secs_f64(),
        peak / 1024
    );
    let server = Arc::try_unwrap(server).unwrap_or_else(|_| panic!("server still shared"));
    assert!(
        server.terminate().success(),
        "the server exited with an error"
    );
    let log = std::fs::read_to_string(&log_path).expect("read log");
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}
