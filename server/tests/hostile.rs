//! Requests that try to make the server spend memory or keep a connection
//! it should not: frames before HELLO, oversized batches, replies larger
//! than the frame limit, repeated features.

mod common;

use common::{hello_frame, server_code as code, TestServer};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tessera_protocol::{
    encode_request, ErrorCode, FrameHeader, Put, PutRow, Request, SlatePart, SlateRequest, Value,
    HEADER_LEN,
};

/// Sends `bytes` on a fresh connection; returns what came back before the
/// server closed it.
fn exchange(server: &TestServer, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn frame(opcode: u8, body_len: u32, body: &[u8]) -> Vec<u8> {
    let mut f = FrameHeader {
        opcode,
        flags: 0,
        request_id: 9,
        body_len,
    }
    .encode()
    .to_vec();
    f.extend_from_slice(body);
    f
}

/// Error codes of every frame in `bytes`.
fn error_codes(mut bytes: &[u8]) -> Vec<u16> {
    let mut codes = Vec::new();
    while bytes.len() >= HEADER_LEN + 2 {
        let len = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
        codes.push(u16::from_le_bytes([
            bytes[HEADER_LEN],
            bytes[HEADER_LEN + 1],
        ]));
        bytes = bytes.get(HEADER_LEN + len..).unwrap_or(&[]);
    }
    codes
}

#[test]
fn before_hello_anything_else_is_refused_and_the_connection_closed() {
    let server = TestServer::start(None);
    // Three unknown-opcode frames: one AUTH_REQUIRED, then the close.
    let mut unknown = frame(0x7f, 4, &[1, 2, 3, 4]);
    unknown.extend(frame(0x7f, 4, &[1, 2, 3, 4]));
    unknown.extend(frame(0x7f, 4, &[1, 2, 3, 4]));
    assert_eq!(
        error_codes(&exchange(&server, &unknown)),
        [ErrorCode::AuthRequired as u16]
    );
    // A GET_SLATE whose body does not decode: refused before decoding.
    assert_eq!(
        error_codes(&exchange(&server, &frame(0x30, 3, &[9, 9, 9]))),
        [ErrorCode::AuthRequired as u16]
    );
    // A large frame before HELLO is refused from its header alone.
    assert_eq!(
        error_codes(&exchange(&server, &frame(0x01, 8 << 20, &[]))),
        [ErrorCode::FrameTooLarge as u16]
    );
    assert_eq!(server.client().ping(b"ok").expect("still serving"), b"ok");
}

#[test]
fn a_batch_over_the_value_limit_is_refused_while_decoding() {
    let server = TestServer::start(None);
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    // 65,536 rows of 20 null features: 1.3 M values in a 2 MB frame.
    let columns: Vec<String> = std::iter::once("user_id".to_string())
        .chain((0..19).map(|_| "clicks_1h".to_string()))
        .collect();
    let rows = (0..65_536)
        .map(|i| PutRow {
            event_ts: 1,
            values: std::iter::once(Value::Int64(i))
                .chain((0..19).map(|_| Value::Null))
                .collect(),
        })
        .collect();
    let put = Put {
        group: "user_features".into(),
        columns,
        rows,
    };
    assert_eq!(code(c.put(&put).unwrap_err()), ErrorCode::LimitExceeded);
    assert_eq!(c.ping(b"x").expect("connection still usable"), b"x");
}

#[test]
fn replies_over_the_frame_limit_and_repeated_features_are_refused_early() {
    let server = TestServer::start(Some("max_frame_bytes = 1048576\n"));
    let mut c = server.client();
    server.apply_news_feed(&mut c);
    let slate = |features: Vec<String>, keys: usize| SlateRequest {
        as_of: None,
        known_at: None,
        parts: vec![SlatePart {
            group: "user_features".into(),
            features,
            keys: (0..keys as i64).map(|i| vec![Value::Int64(i)]).collect(),
        }],
    };
    let repeated = vec!["clicks_1h".to_string(); 3];
    assert_eq!(
        code(c.get_slate(&slate(repeated, 1)).unwrap_err()),
        ErrorCode::Validation
    );
    // Every feature of 4,096 keys is several MB: over the 1 MiB frame.
    assert_eq!(
        code(c.get_slate(&slate(vec![], 4096)).unwrap_err()),
        ErrorCode::LimitExceeded
    );
    let kib = server.status_kib("VmHWM");
    assert!(kib < 512 * 1024, "peak RSS {kib} KiB");
    assert!(c.get_slate(&slate(vec!["clicks_1h".into()], 10)).is_ok());
}

/// A `HELLO` followed by `n` pipelined `PING`s, as one buffer.
fn hello_and_pings(n: usize) -> Vec<u8> {
    let mut out = hello_frame();
    for id in 1..=n as u64 {
        encode_request(id, &Request::Ping(b"flood".to_vec()), &mut out).expect("encode");
    }
    out
}

/// Reads `n` whole frames from `s`.
fn read_frames(s: &mut TcpStream, n: usize) {
    for _ in 0..n {
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).expect("reply header");
        let len = u32::from_le_bytes([h[16], h[17], h[18], h[19]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).expect("reply body");
    }
}

#[test]
fn a_flood_stalled_mid_frame_does_not_hold_up_another_flood() {
    // Two workers: the burst gate then has a single permit, which the
    // stalled flood must give back while it waits for the rest of a frame.
    let server = TestServer::start(Some("worker_threads = 2\n"));
    const PINGS: usize = 5_000;
    let mut stalled = TcpStream::connect(server.addr).expect("connect");
    let mut burst = hello_and_pings(PINGS);
    burst.extend_from_slice(&frame(0x02, 5, b"flood")[..HEADER_LEN / 2]);
    stalled.write_all(&burst).expect("send");
    // Its pings are answered; then it waits for the half header's rest.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    read_frames(&mut stalled, 1 + PINGS);

    let mut other = TcpStream::connect(server.addr).expect("connect");
    other
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = std::time::Instant::now();
    other.write_all(&hello_and_pings(PINGS)).expect("send");
    read_frames(&mut other, 1 + PINGS);
    // Held shut, the gate would open only when the stalled frame's 10 s
    // deadline closes its connection.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the second flood took {:?}",
        started.elapsed()
    );
    drop(stalled);
}
