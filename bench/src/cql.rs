//! A lean client for the CQL native protocol, version 3: the one Apache
//! Cassandra 2.1 speaks (the `scylla` crate needs version 4). Enough for the
//! benchmark and no more: `STARTUP`, `QUERY`, `PREPARE` and `EXECUTE` at a
//! chosen consistency, with many requests in flight on one connection
//! (each on its own stream id), and `RESULT` rows read into their cells'
//! bytes.
//!
//! Frame (all integers big-endian): `version u8` (`0x03`, `0x83` in
//! replies), `flags u8`, `stream i16`, `opcode u8`, `length u32`, then the
//! body.

use crate::net_bench::BoxError;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpStream;

const REQUEST_VERSION: u8 = 0x03;
const RESPONSE_VERSION: u8 = 0x83;
const HEADER_LEN: usize = 9;
/// Largest reply body this client reads (Cassandra's default frame limit).
const MAX_BODY: usize = 256 << 20;
/// Stream ids a connection uses; v3 allows up to 32,768.
pub const MAX_IN_FLIGHT: usize = 1024;

mod opcode {
    pub const ERROR: u8 = 0x00;
    pub const STARTUP: u8 = 0x01;
    pub const READY: u8 = 0x02;
    pub const QUERY: u8 = 0x07;
    pub const RESULT: u8 = 0x08;
    pub const PREPARE: u8 = 0x09;
    pub const EXECUTE: u8 = 0x0A;
}

/// Result kinds.
const ROWS: i32 = 0x0002;
const PREPARED: i32 = 0x0004;

/// Consistency levels used here.
pub const ONE: u16 = 0x0001;

/// Query-parameter flags.
const WITH_VALUES: u8 = 0x01;
const SKIP_METADATA: u8 = 0x02;

/// A prepared statement's id.
#[derive(Clone, Debug)]
pub struct Prepared(Vec<u8>);

/// The rows of a `RESULT`: each row's cells, `None` for a null.
pub type Rows = Vec<Vec<Option<Vec<u8>>>>;

/// One connection.
pub struct Cql {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    next_stream: i16,
}

impl Cql {
    /// Connects and sends `STARTUP`.
    pub fn connect(addr: &str) -> Result<Cql, BoxError> {
        let stream = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
        stream.set_nodelay(true)?;
        let mut cql = Cql {
            reader: BufReader::with_capacity(256 << 10, stream.try_clone()?),
            writer: BufWriter::with_capacity(256 << 10, stream),
            next_stream: 0,
        };
        let mut body = Vec::new();
        put_u16(&mut body, 1);
        put_string(&mut body, "CQL_VERSION");
        put_string(&mut body, "3.0.0");
        let id = cql.send(opcode::STARTUP, &body)?;
        cql.flush()?;
        let (op, _) = cql.receive(id)?;
        if op != opcode::READY {
            return Err(format!("STARTUP answered with opcode {op:#04x}").into());
        }
        Ok(cql)
    }

    /// Runs a statement without values (schema changes), waiting for it.
    pub fn query(&mut self, cql: &str) -> Result<(), BoxError> {
        let mut body = Vec::new();
        put_long_string(&mut body, cql);
        put_u16(&mut body, ONE);
        body.push(0);
        let id = self.send(opcode::QUERY, &body)?;
        self.flush()?;
        self.receive(id).map(|_| ())
    }

    /// Prepares a statement.
    pub fn prepare(&mut self, cql: &str) -> Result<Prepared, BoxError> {
        let mut body = Vec::new();
        put_long_string(&mut body, cql);
        let id = self.send(opcode::PREPARE, &body)?;
        self.flush()?;
        let (_, body) = self.receive(id)?;
        let mut r = Reader(&body);
        if r.i32()? != PREPARED {
            return Err("PREPARE did not answer with a prepared statement".into());
        }
        Ok(Prepared(r.short_bytes()?.to_vec()))
    }

    /// Queues an `EXECUTE` of `p` with `values` (each a cell's bytes) at
    /// consistency ONE; returns its stream id. Send with [`Cql::flush`],
    /// read with [`Cql::receive`]. Rows come without metadata.
    pub fn execute(&mut self, p: &Prepared, values: &[&[u8]]) -> Result<i16, BoxError> {
        let mut body = Vec::with_capacity(32 + values.iter().map(|v| v.len() + 4).sum::<usize>());
        put_u16(&mut body, p.0.len() as u16);
        body.extend_from_slice(&p.0);
        put_u16(&mut body, ONE);
        body.push(WITH_VALUES | SKIP_METADATA);
        put_u16(&mut body, values.len() as u16);
        for v in values {
            body.extend_from_slice(&(v.len() as i32).to_be_bytes());
            body.extend_from_slice(v);
        }
        self.send(opcode::EXECUTE, &body)
    }

    /// Writes what is queued.
    pub fn flush(&mut self) -> Result<(), BoxError> {
        Ok(self.writer.flush()?)
    }

    /// Reads the reply on stream `id`, with nothing else in flight; an
    /// `ERROR` is an `Err`.
    pub fn receive(&mut self, id: i16) -> Result<(u8, Vec<u8>), BoxError> {
        let (stream, op, body) = self.receive_any()?;
        if stream != id {
            return Err(format!("reply on stream {stream}, expected {id}").into());
        }
        Ok((op, body))
    }

    /// Reads the next reply, whichever stream it answers (the server
    /// answers requests in flight in any order).
    pub fn receive_any(&mut self) -> Result<(i16, u8, Vec<u8>), BoxError> {
        let mut h = [0u8; HEADER_LEN];
        self.reader.read_exact(&mut h)?;
        if h[0] != RESPONSE_VERSION {
            return Err(format!("reply version {:#04x}", h[0]).into());
        }
        let stream = i16::from_be_bytes([h[2], h[3]]);
        let op = h[4];
        let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
        if len > MAX_BODY {
            return Err(format!("a {len}-byte reply").into());
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        if op == opcode::ERROR {
            let mut r = Reader(&body);
            let code = r.i32()?;
            let message = r.string().unwrap_or_default();
            return Err(ServerError { code, message }.into());
        }
        Ok((stream, op, body))
    }

    /// Reads the next `RESULT` of an `EXECUTE` (rows without metadata):
    /// its stream and rows.
    pub fn receive_rows(&mut self) -> Result<(i16, Rows), BoxError> {
        let (stream, op, body) = self.receive_any()?;
        if op != opcode::RESULT {
            return Err(format!("opcode {op:#04x} where a RESULT was due").into());
        }
        Ok((stream, parse_rows(&body)?))
    }

    fn send(&mut self, op: u8, body: &[u8]) -> Result<i16, BoxError> {
        let id = self.next_stream;
        self.next_stream = (self.next_stream + 1) % MAX_IN_FLIGHT as i16;
        let mut h = [0u8; HEADER_LEN];
        h[0] = REQUEST_VERSION;
        h[2..4].copy_from_slice(&id.to_be_bytes());
        h[4] = op;
        h[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
        self.writer.write_all(&h)?;
        self.writer.write_all(body)?;
        Ok(id)
    }
}

/// An `ERROR` reply: the request failed on the server; the connection
/// is still in step.
#[derive(Debug)]
pub struct ServerError {
    pub code: i32,
    pub message: String,
}

/// Error codes of a request that may succeed if sent again: the
/// coordinator found too few replicas alive (`Unavailable`), was
/// overloaded, or timed out waiting for a replica.
const TRANSIENT_ERRORS: [i32; 4] = [0x1000, 0x1001, 0x1100, 0x1200];

impl ServerError {
    /// True if sending the request again may succeed.
    pub fn is_transient(&self) -> bool {
        TRANSIENT_ERRORS.contains(&self.code)
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cassandra error {:#06x}: {}", self.code, self.message)
    }
}

impl std::error::Error for ServerError {}

/// Rows of a `RESULT` body whose metadata was skipped (none for another
/// kind of result, such as the `Void` of an insert).
fn parse_rows(body: &[u8]) -> Result<Rows, BoxError> {
    let mut r = Reader(body);
    if r.i32()? != ROWS {
        return Ok(Vec::new());
    }
    let flags = r.i32()?;
    let columns = r.i32()?.max(0) as usize;
    if flags & 0x0002 != 0 {
        r.bytes()?; // paging state
    }
    if flags & 0x0004 == 0 {
        return Err("rows came with metadata although it was skipped".into());
    }
    let n = r.i32()?.max(0) as usize;
    let mut rows = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let row = (0..columns)
            .map(|_| r.bytes().map(|b| b.map(<[u8]>::to_vec)))
            .collect::<Result<_, _>>()?;
        rows.push(row);
    }
    Ok(rows)
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}

fn put_long_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Reads big-endian protocol values from a body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BoxError> {
        if self.0.len() < n {
            return Err("a truncated CQL body".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn i32(&mut self) -> Result<i32, BoxError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u16(&mut self) -> Result<u16, BoxError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn string(&mut self) -> Result<String, BoxError> {
        let n = self.u16()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    fn short_bytes(&mut self) -> Result<&'a [u8], BoxError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// `[bytes]`: a length, negative for null.
    fn bytes(&mut self) -> Result<Option<&'a [u8]>, BoxError> {
        let n = self.i32()?;
        if n < 0 {
            return Ok(None);
        }
        self.take(n as usize).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_metadata_parse_and_truncation_is_an_error() {
        let mut body = Vec::new();
        body.extend_from_slice(&ROWS.to_be_bytes());
        body.extend_from_slice(&0x0004i32.to_be_bytes()); // no metadata
        body.extend_from_slice(&2i32.to_be_bytes()); // columns
        body.extend_from_slice(&1i32.to_be_bytes()); // rows
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        body.extend_from_slice(&(-1i32).to_be_bytes()); // null
        let rows = parse_rows(&body).expect("rows");
        assert_eq!(rows, vec![vec![Some(b"abc".to_vec()), None]]);
        assert!(parse_rows(&body[..body.len() - 2]).is_err());
    }
}
