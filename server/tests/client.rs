//! The Rust client against the real `tessera` binary: reconnection after a
//! server restart, the connection pool, pipelining past the window, and
//! timeouts against a server that never answers.

mod common;

use common::TestServer;
use std::net::TcpListener;
use std::time::{Duration, Instant};
use tessera_protocol::{
    Client, ClientError, ClientOptions, Pool, Request, PIPELINE_WINDOW_REQUESTS,
};

#[test]
fn reads_reconnect_after_a_server_restart_and_writes_say_they_may_be_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(tmp.path(), None, &[]);
    let addr = server.addr;
    let mut c = server.client();
    assert_eq!(c.ping(b"1").expect("ping"), b"1");
    assert!(server.terminate().success());

    // Same port, same data.
    let listen = addr.to_string();
    let server = TestServer::start_on(&listen, tmp.path(), None, &[]);
    assert_eq!(server.addr, addr);
    // The old connection is dead; the read is resent on a new one.
    assert_eq!(c.ping(b"2").expect("ping after restart"), b"2");
    assert!(c.is_connected());

    assert!(server.terminate().success());
    let server = TestServer::start_on(&listen, tmp.path(), None, &[]);
    // A write on a dead connection is not resent: the caller is told.
    let put = tessera_protocol::Put {
        group: "user_features".into(),
        columns: vec!["user_id".into()],
        rows: vec![],
    };
    match c.put(&put) {
        Err(ClientError::Unknown { op, .. }) => assert_eq!(op, "PUT"),
        other => panic!("expected an unknown-outcome error, got {other:?}"),
    }
    // The next call reconnects.
    assert_eq!(c.ping(b"3").expect("ping"), b"3");
    drop(server);
}

#[test]
fn a_pool_shares_a_bounded_number_of_connections() {
    let server = TestServer::start(None);
    let pool = Pool::new(server.addr, ClientOptions::default(), 2);
    std::thread::scope(|s| {
        for t in 0..6u8 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..50u8 {
                    let mut c = pool.get().expect("a pooled client");
                    assert_eq!(c.ping(&[t, i]).expect("ping"), [t, i]);
                }
            });
        }
    });
    assert!(pool.open() <= 2, "{} connections open", pool.open());
}

#[test]
fn pipelines_larger_than_the_window_complete_in_order() {
    let server = TestServer::start(None);
    let mut c = server.client();
    let n = PIPELINE_WINDOW_REQUESTS * 4 + 3;
    // Large payloads, so the byte window binds too.
    let requests: Vec<Request> = (0..n)
        .map(|i| Request::Ping(vec![(i % 251) as u8; 1000]))
        .collect();
    let replies = c.pipeline(&requests).expect("pipeline");
    assert_eq!(replies.len(), n);
    for (i, r) in replies.into_iter().enumerate() {
        match r.expect("reply") {
            tessera_protocol::Reply::Ping(p) => assert_eq!(p, vec![(i % 251) as u8; 1000]),
            other => panic!("unexpected {other:?}"),
        }
    }
    // A failing request in the middle fails alone.
    let requests = vec![
        Request::Ping(vec![1]),
        Request::Ping(vec![0; tessera_protocol::MAX_PING_BYTES + 1]),
        Request::Ping(vec![3]),
    ];
    let replies = c.pipeline(&requests).expect("pipeline");
    assert!(replies[0].is_ok() && replies[1].is_err() && replies[2].is_ok());
}

#[test]
fn a_server_that_never_answers_times_out() {
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let start = Instant::now();
    let err = Client::connect(addr, opts).expect_err("no HELLO reply");
    assert!(matches!(err, ClientError::Io(_)), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(silent);
}
