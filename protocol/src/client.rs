//! The blocking Rust client: one connection, typed calls, pipelining,
//! timeouts and reconnection. [`crate::Pool`] shares several among threads.
//!
//! Invariants:
//! - a connection is used only while its stream is in step with the
//!   server: any I/O error, timeout or undecodable frame drops it, and the
//!   next call opens a new one (when [`ClientOptions::reconnect`] allows);
//! - a request that changes data (`PUT`, `DELETE`, `REGISTRY_APPLY`) is
//!   never resent after a lost connection: the error says it may or may not
//!   have been applied. Reads are resent once on a fresh connection;
//! - at most [`PIPELINE_WINDOW_BYTES`] of requests are unanswered at once,
//!   so a pipelined burst never deadlocks against a server that blocks on
//!   writing its replies.

use crate::body::Body;
use crate::error::{DecodeError, EncodeError, ErrorBody};
use crate::frame::{begin_frame, finish_frame, flags, FrameHeader, PROTOCOL_VERSION};
use crate::limits::{DEFAULT_MAX_FRAME_BYTES, HEADER_LEN};
use crate::message::{
    self, decode_error, AuditEntry, CommitReply, Delete, Hello, HelloReply, HistoryRequest,
    ImportBegin, ImportBegun, ImportCommitted, ImportRows, ImportRowsReply, Put, Reply, Request,
    SlateRequest, SpecFile,
};
use crate::offline::{self, ExportRequest, PitLookup};
use crate::op::{Opcode, Role};
use crate::slate::{HistoryReply, SlateReply};
use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Most request bytes sent and not yet answered during a pipeline.
pub const PIPELINE_WINDOW_BYTES: usize = 64 << 10;
/// Most requests sent and not yet answered during a pipeline.
pub const PIPELINE_WINDOW_REQUESTS: usize = 256;
/// Longest wait for an `IMPORT_COMMIT` reply (the server merges the whole
/// import first: about a second per million rows on two cores).
pub const IMPORT_COMMIT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Socket buffer on the client's side.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// How a client connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The access token; empty in local development mode.
    pub token: String,
    /// A name for the server's logs.
    pub client_name: String,
    /// How long to wait for the TCP connection.
    pub connect_timeout: Duration,
    /// How long any one read or write on the socket may take.
    pub request_timeout: Duration,
    /// Whether a lost connection is reopened by the next call.
    pub reconnect: bool,
    /// Wait for replies by spinning on the socket instead of sleeping in
    /// the kernel. It costs a core while a request is outstanding and saves
    /// the wake-up of a sleeping thread on every reply: on a VM that is a
    /// large share of a round trip. For latency-critical callers and
    /// benchmarks with few connections.
    pub busy_poll: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            token: String::new(),
            client_name: "tessera-rust-client".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            reconnect: true,
            busy_poll: false,
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{0}")]
    Server(ErrorBody),
    /// The connection failed, closed or timed out.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// A write's connection was lost before its reply: it may or may not
    /// have been applied.
    #[error("the connection was lost before the reply to {op}; it may or may not have been applied: {source}")]
    Unknown {
        /// The request's operation.
        op: &'static str,
        /// What happened.
        #[source]
        source: io::Error,
    },
    /// The server sent something this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The request cannot be framed.
    #[error("request: {0}")]
    Encode(#[from] EncodeError),
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.addrs)
            .field("identity", &self.hello.identity)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

/// One open, authenticated connection.
struct Connection {
    reader: BufReader<Socket>,
    writer: Socket,
    hello: HelloReply,
}

/// A connection to a Tessera server.
pub struct Client {
    addrs: Vec<SocketAddr>,
    options: ClientOptions,
    conn: Option<Connection>,
    /// The last `HELLO` reply, kept across reconnects.
    hello: HelloReply,
    next_id: u64,
    out: Vec<u8>,
    /// Ids of `IMPORT_ROWS` sent and not yet answered, oldest first.
    unanswered_imports: std::collections::VecDeque<u64>,
}

impl Client {
    /// Connects to `addr` and authenticates.
    pub fn connect(
        addr: impl ToSocketAddrs,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no address",
            )));
        }
        let mut next_id = 1;
        let conn = Connection::open(&addrs, &options, &mut next_id)?;
        Ok(Client {
            addrs,
            hello: conn.hello.clone(),
            conn: Some(conn),
            options,
            next_id,
            out: Vec::with_capacity(4096),
            unanswered_imports: std::collections::VecDeque::new(),
        })
    }

    /// The identity the server gave the token.
    pub fn identity(&self) -> &str {
        &self.hello.identity
    }

    /// The token's role.
    pub fn role(&self) -> Role {
        self.hello.role
    }

    /// The server's name and version.
    pub fn server(&self) -> &str {
        &self.hello.server
    }

    /// Whether the client holds an open connection.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// `PING`: the payload comes back.
    pub fn ping(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        match self.call(Opcode::Ping, |out| {
            crate::wire::put_bytes32(out, payload, "ping payload")
        })? {
            Reply::Ping(p) => Ok(p),
            other => Err(unexpected(&other)),
        }
    }

    /// `REGISTRY_GET`: the registry version and the registry as JSON.
    pub fn registry_get(&mut self) -> Result<(u64, String), ClientError> {
        match self.call(Opcode::RegistryGet, |_| Ok(()))? {
            Reply::RegistryGet {
                version,
                registry_json,
            } => Ok((version, registry_json)),
            other => Err(unexpected(&other)),
        }
    }

    /// `REGISTRY_PLAN`: the version planned against, whether anything
    /// changes, and the diff.
    pub fn registry_plan(
        &mut self,
        files: Vec<SpecFile>,
    ) -> Result<(u64, bool, String), ClientError> {
        match self.call(Opcode::RegistryPlan, |out| {
            message::encode_files(&files, out)
        })? {
            Reply::RegistryPlan {
                version,
                changes,
                plan,
            } => Ok((version, changes, plan)),
            other => Err(unexpected(&other)),
        }
    }

    /// `REGISTRY_APPLY` against `expected_version`: the new version and
    /// what was applied.
    pub fn registry_apply(
        &mut self,
        expected_version: u64,
        files: Vec<SpecFile>,
    ) -> Result<(u64, String), ClientError> {
        let reply = self.call(Opcode::RegistryApply, |out| {
            crate::wire::put_u64(out, expected_version);
            message::encode_files(&files, out)
        })?;
        match reply {
            Reply::RegistryApply { version, plan } => Ok((version, plan)),
            other => Err(unexpected(&other)),
        }
    }

    /// `REGISTRY_HISTORY`: audit records, newest first (`limit` 0: all).
    pub fn registry_history(&mut self, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        match self.call(Opcode::RegistryHistory, |out| {
            crate::wire::put_u32(out, limit);
            Ok(())
        })? {
            Reply::RegistryHistory(entries) => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    /// `PUT`: an all-or-nothing batch.
    pub fn put(&mut self, put: &Put) -> Result<CommitReply, ClientError> {
        match self.call(Opcode::Put, |out| message::encode_put(put, out))? {
            Reply::Put(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// `DELETE`: tombstones.
    pub fn delete(&mut self, delete: &Delete) -> Result<CommitReply, ClientError> {
        match self.call(Opcode::Delete, |out| message::encode_delete(delete, out))? {
            Reply::Delete(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// `GET_SLATE`.
    pub fn get_slate(&mut self, request: &SlateRequest) -> Result<SlateReply, ClientError> {
        match self.call(Opcode::GetSlate, |out| message::encode_slate(request, out))? {
            Reply::GetSlate(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// `HISTORY`.
    pub fn history(&mut self, request: &HistoryRequest) -> Result<HistoryReply, ClientError> {
        match self.call(Opcode::History, |out| message::encode_history(request, out))? {
            Reply::History(h) => Ok(h),
            other => Err(unexpected(&other)),
        }
    }

    /// `STATS`: the server's counters as JSON.
    pub fn stats(&mut self) -> Result<String, ClientError> {
        match self.call(Opcode::Stats, |_| Ok(()))? {
            Reply::Stats(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }

    /// `IMPORT_BEGIN`: opens an import session on this connection. The
    /// session ends with [`Client::import_commit`] or
    /// [`Client::import_abort`], or is aborted by the server when the
    /// connection closes.
    pub fn import_begin(&mut self, begin: &ImportBegin) -> Result<ImportBegun, ClientError> {
        match self.call(Opcode::ImportBegin, |out| {
            message::encode_import_begin(begin, out)
        })? {
            Reply::ImportBegin(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    /// `IMPORT_ROWS`: a batch of rows for a session.
    pub fn import_rows(&mut self, rows: &ImportRows) -> Result<ImportRowsReply, ClientError> {
        match self.call(Opcode::ImportRows, |out| {
            message::encode_import_rows(rows, out);
            Ok(())
        })? {
            Reply::ImportRows(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends `IMPORT_ROWS` without waiting for its reply, so the next batch
    /// can be prepared while the server takes this one; collect the replies,
    /// in order, with [`Client::receive_import_rows`]. Import replies are
    /// small, so a few batches in flight cannot back up the connection.
    pub fn send_import_rows(&mut self, rows: &ImportRows) -> Result<(), ClientError> {
        let sent = self.send_frame(Opcode::ImportRows, |out| {
            message::encode_import_rows(rows, out);
            Ok(())
        });
        if let Err(ClientError::Io(_)) = &sent {
            self.conn = None;
        }
        self.unanswered_imports.push_back(sent?);
        Ok(())
    }

    /// The reply to the oldest `IMPORT_ROWS` sent with
    /// [`Client::send_import_rows`].
    pub fn receive_import_rows(&mut self) -> Result<ImportRowsReply, ClientError> {
        let id = self
            .unanswered_imports
            .pop_front()
            .ok_or_else(|| ClientError::Protocol("no IMPORT_ROWS is waiting for a reply".into()))?;
        let received = self.receive_reply(id, Opcode::ImportRows);
        match received {
            Ok(Reply::ImportRows(r)) => Ok(r),
            Ok(other) => Err(unexpected(&other)),
            Err(e) => {
                if !matches!(&e, ClientError::Server(b) if !b.code.closes_connection()) {
                    self.conn = None;
                }
                Err(e)
            }
        }
    }

    /// `IMPORT_COMMIT`: makes the session's rows visible at once. The
    /// server merges everything the session wrote before it answers, which
    /// takes time in proportion to the import, so this waits up to
    /// [`IMPORT_COMMIT_TIMEOUT`] rather than the request timeout.
    pub fn import_commit(&mut self, session: u64) -> Result<ImportCommitted, ClientError> {
        self.set_timeout(IMPORT_COMMIT_TIMEOUT.max(self.options.request_timeout))?;
        let reply = self.call(Opcode::ImportCommit, |out| {
            crate::wire::put_u64(out, session);
            Ok(())
        });
        let restored = self.set_timeout(self.options.request_timeout);
        let reply = reply?;
        restored?;
        match reply {
            Reply::ImportCommit(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    /// Sets the open connection's read and write timeout.
    fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        for socket in [conn.reader.get_mut(), &mut conn.writer] {
            socket.timeout = timeout;
            if !socket.busy_poll {
                socket.stream.set_read_timeout(Some(timeout))?;
                socket.stream.set_write_timeout(Some(timeout))?;
            }
        }
        Ok(())
    }

    /// `IMPORT_ABORT`: discards the session.
    pub fn import_abort(&mut self, session: u64) -> Result<(), ClientError> {
        let reply = self.call(Opcode::ImportAbort, |out| {
            crate::wire::put_u64(out, session);
            Ok(())
        })?;
        match reply {
            Reply::ImportAbort => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// `PIT_LOOKUP`: each key's features as of its own time; one part, a
    /// row per lookup.
    pub fn pit_lookup(&mut self, request: &PitLookup) -> Result<SlateReply, ClientError> {
        match self.call(Opcode::PitLookup, |out| offline::encode_pit(request, out))? {
            Reply::PitLookup(r) => Ok(r),
            other => Err(unexpected(&other)),
        }
    }

    /// `EXPORT`: starts the stream; read its chunks with
    /// [`ExportStream::next_chunk`]. The connection carries nothing else
    /// until the stream ends, and a stream dropped before its end closes
    /// the connection (the rest of the stream would be in the way).
    pub fn export(&mut self, request: &ExportRequest) -> Result<ExportStream<'_>, ClientError> {
        if !self.unanswered_imports.is_empty() {
            return Err(ClientError::Protocol(
                "replies to IMPORT_ROWS are still owed: receive them first".into(),
            ));
        }
        self.ensure_connected()?;
        let id = self
            .send_frame(Opcode::Export, |out| offline::encode_export(request, out))
            .inspect_err(|_| self.conn = None)?;
        Ok(ExportStream {
            client: self,
            id,
            done: false,
        })
    }

    /// Sends every request without waiting for replies in between, and
    /// returns each one's reply, in request order. A server error fails
    /// only its own request. If the connection is lost, requests already
    /// answered keep their replies; a write sent but unanswered gets
    /// [`ClientError::Unknown`] (it may have been applied), every other
    /// unanswered request an I/O error (it was not applied, or is safe to
    /// resend). `Err` only when no connection could be opened.
    pub fn pipeline(
        &mut self,
        requests: &[Request],
    ) -> Result<Vec<Result<Reply, ClientError>>, ClientError> {
        self.ensure_connected()?;
        let mut results: Vec<Option<Result<Reply, ClientError>>> =
            (0..requests.len()).map(|_| None).collect();
        let mut sent = vec![false; requests.len()];
        if let Err(e) = self.pipeline_into(requests, &mut results, &mut sent) {
            self.conn = None;
            let lost = e.to_string();
            for (i, slot) in results.iter_mut().enumerate() {
                if slot.is_some() {
                    continue;
                }
                let source = io::Error::new(io::ErrorKind::ConnectionAborted, lost.clone());
                *slot = Some(Err(match (sent[i], requests[i].is_idempotent()) {
                    (true, false) => ClientError::Unknown {
                        op: requests[i].opcode().name(),
                        source,
                    },
                    _ => ClientError::Io(source),
                }));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ClientError::Protocol("no reply".into()))))
            .collect())
    }

    fn pipeline_into(
        &mut self,
        requests: &[Request],
        results: &mut [Option<Result<Reply, ClientError>>],
        sent: &mut [bool],
    ) -> Result<(), ClientError> {
        // id -> (index, opcode, bytes sent)
        let mut pending: HashMap<u64, (usize, Opcode, usize)> = HashMap::new();
        let (mut next, mut in_flight, mut answered) = (0, 0, 0);
        // An encoded request that did not fit the window yet.
        let mut staged: Option<(usize, u64, Vec<u8>)> = None;
        while answered < requests.len() {
            self.out.clear();
            while pending.len() < PIPELINE_WINDOW_REQUESTS {
                let (index, id, frame) = match staged.take() {
                    Some(s) => s,
                    None if next < requests.len() => {
                        let id = self.take_id();
                        let mut frame = Vec::new();
                        let index = next;
                        next += 1;
                        if let Err(e) = self.encode_checked(id, &requests[index], &mut frame) {
                            results[index] = Some(Err(e));
                            answered += 1;
                            continue;
                        }
                        (index, id, frame)
                    }
                    None => break,
                };
                // Admit only what fits the window; a request larger than the
                // window goes alone, once nothing else is in flight.
                if !pending.is_empty() && in_flight + frame.len() > PIPELINE_WINDOW_BYTES {
                    staged = Some((index, id, frame));
                    break;
                }
                in_flight += frame.len();
                pending.insert(id, (index, requests[index].opcode(), frame.len()));
                sent[index] = true;
                self.out.extend_from_slice(&frame);
            }
            let conn = self.conn.as_mut().ok_or_else(not_connected)?;
            if !self.out.is_empty() {
                conn.writer.write_all(&self.out)?;
            }
            if pending.is_empty() {
                continue;
            }
            let (header, body) = conn.read_frame()?;
            let (index, op, bytes) = pending.remove(&header.request_id).ok_or_else(|| {
                ClientError::Protocol(format!(
                    "a reply to unknown request id {}",
                    header.request_id
                ))
            })?;
            in_flight -= bytes;
            answered += 1;
            let reply = decode_reply(op, &header, body);
            let closes =
                matches!(&reply, Err(ClientError::Server(e)) if e.code.closes_connection());
            results[index] = Some(reply);
            if closes {
                return Err(ClientError::Protocol(
                    "the server closed the connection".into(),
                ));
            }
        }
        Ok(())
    }

    /// Encodes a request frame, refusing one over the server's frame limit
    /// before anything is sent.
    fn encode_checked(
        &self,
        id: u64,
        request: &Request,
        out: &mut Vec<u8>,
    ) -> Result<(), ClientError> {
        message::encode_request(id, request, out)?;
        self.check_frame_size(out.len())
    }

    fn check_frame_size(&self, len: usize) -> Result<(), ClientError> {
        let max = self.hello.max_frame as usize;
        if len > max {
            return Err(ClientError::Encode(EncodeError {
                what: "request frame",
                len,
                max,
            }));
        }
        Ok(())
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn ensure_connected(&mut self) -> Result<(), ClientError> {
        if self.conn.is_some() {
            return Ok(());
        }
        if !self.options.reconnect {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection was lost and reconnect is off",
            )));
        }
        let conn = Connection::open(&self.addrs, &self.options, &mut self.next_id)?;
        self.hello = conn.hello.clone();
        self.conn = Some(conn);
        // Replies owed on the old connection will never come.
        self.unanswered_imports.clear();
        Ok(())
    }

    /// Sends one request whose body `encode` writes, and reads its reply.
    fn call(
        &mut self,
        op: Opcode,
        encode: impl Fn(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<Reply, ClientError> {
        // Import requests belong to a session on this connection: they are
        // never resent on another.
        let idempotent = op.is_idempotent();
        let fresh = self.conn.is_none();
        match self.call_once(op, &encode) {
            Err(ClientError::Io(e)) => {
                self.conn = None;
                if !idempotent {
                    return Err(ClientError::Unknown {
                        op: op.name(),
                        source: e,
                    });
                }
                // A timeout is a slow server, not a stale connection:
                // resending would only double the wait.
                if fresh || !self.options.reconnect || e.kind() == io::ErrorKind::TimedOut {
                    return Err(ClientError::Io(e));
                }
                // The connection went stale (the server restarted, an idle
                // timeout): one retry on a fresh one.
                self.call_once(op, &encode)
                    .inspect_err(|_| self.conn = None)
            }
            Err(e @ ClientError::Protocol(_)) => {
                self.conn = None;
                Err(e)
            }
            Err(ClientError::Server(e)) if e.code.closes_connection() => {
                self.conn = None;
                Err(ClientError::Server(e))
            }
            other => other,
        }
    }

    fn call_once(
        &mut self,
        op: Opcode,
        encode: &impl Fn(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<Reply, ClientError> {
        if !self.unanswered_imports.is_empty() {
            return Err(ClientError::Protocol(
                "replies to IMPORT_ROWS are still owed: receive them first".into(),
            ));
        }
        self.ensure_connected()?;
        let id = self.send_frame(op, encode)?;
        self.receive_reply(id, op)
    }

    /// Frames a request whose body `encode` writes, and sends it; returns
    /// its id.
    fn send_frame(
        &mut self,
        op: Opcode,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<u64, ClientError> {
        let id = self.take_id();
        self.out.clear();
        let frame = begin_frame(id, op as u8, 0, &mut self.out);
        encode(&mut self.out)?;
        finish_frame(&mut self.out, frame);
        self.check_frame_size(self.out.len())?;
        let conn = self.conn.as_mut().ok_or_else(not_connected)?;
        conn.writer.write_all(&self.out)?;
        Ok(id)
    }

    /// Reads the reply to request `id`, an `op`.
    fn receive_reply(&mut self, id: u64, op: Opcode) -> Result<Reply, ClientError> {
        let conn = self.conn.as_mut().ok_or_else(not_connected)?;
        let (header, body) = conn.read_frame()?;
        if header.request_id != id {
            return Err(ClientError::Protocol(format!(
                "reply id {} to request {id}",
                header.request_id
            )));
        }
        decode_reply(op, &header, body)
    }
}

/// The chunks of one `EXPORT`, read in order from the client's connection.
pub struct ExportStream<'c> {
    client: &'c mut Client,
    id: u64,
    done: bool,
}

impl ExportStream<'_> {
    /// The next chunk; `None` after the last. A chunk is laid out as a
    /// `HISTORY` reply whose first columns are the entity's key columns. An
    /// error ends the stream.
    pub fn next_chunk(&mut self) -> Result<Option<HistoryReply>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let read = self.read_chunk();
        match &read {
            Ok((_, more)) => self.done = !more,
            Err(ClientError::Server(e)) if !e.code.closes_connection() => self.done = true,
            Err(_) => {
                self.done = true;
                self.client.conn = None;
            }
        }
        read.map(|(chunk, _)| Some(chunk))
    }

    fn read_chunk(&mut self) -> Result<(HistoryReply, bool), ClientError> {
        let conn = self.client.conn.as_mut().ok_or_else(not_connected)?;
        let (header, body) = conn.read_one()?;
        if header.request_id != self.id {
            return Err(ClientError::Protocol(format!(
                "reply id {} in the stream of request {}",
                header.request_id, self.id
            )));
        }
        let more = header.flags & flags::MORE != 0;
        if more && header.flags & flags::ERROR != 0 {
            return Err(ClientError::Protocol("an error frame with MORE set".into()));
        }
        match decode_reply(Opcode::Export, &header, body)? {
            Reply::Export(chunk) => Ok((chunk, more)),
            other => Err(unexpected(&other)),
        }
    }
}

impl Drop for ExportStream<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.client.conn = None;
        }
    }
}

fn not_connected() -> ClientError {
    ClientError::Io(io::Error::new(io::ErrorKind::NotConnected, "not connected"))
}

fn unexpected(reply: &Reply) -> ClientError {
    ClientError::Protocol(format!("unexpected {} reply", reply.opcode().name()))
}

/// The reply (or server error) in a frame answering `op`.
fn decode_reply(op: Opcode, header: &FrameHeader, body: Body) -> Result<Reply, ClientError> {
    if header.flags & flags::ERROR != 0 {
        return Err(ClientError::Server(decode_error(body.bytes())?));
    }
    if header.opcode != op as u8 {
        return Err(ClientError::Protocol(format!(
            "a reply with opcode {:#04x} to {}",
            header.opcode,
            op.name()
        )));
    }
    Ok(Reply::decode(op, body)?)
}

impl Connection {
    fn open(
        addrs: &[SocketAddr],
        options: &ClientOptions,
        next_id: &mut u64,
    ) -> Result<Connection, ClientError> {
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(addr, options.connect_timeout) {
                Ok(stream) => return Connection::hello(stream, options, next_id),
                Err(e) => last = Some(e),
            }
        }
        Err(ClientError::Io(
            last.unwrap_or_else(|| io::Error::other("no address")),
        ))
    }

    fn hello(
        stream: TcpStream,
        options: &ClientOptions,
        next_id: &mut u64,
    ) -> Result<Connection, ClientError> {
        stream.set_nodelay(true)?;
        if options.busy_poll {
            stream.set_nonblocking(true)?;
        } else {
            stream.set_read_timeout(Some(options.request_timeout))?;
            stream.set_write_timeout(Some(options.request_timeout))?;
        }
        let timeout = options.request_timeout;
        let placeholder = HelloReply {
            version: PROTOCOL_VERSION,
            role: Role::Read,
            identity: String::new(),
            server: String::new(),
            max_frame: DEFAULT_MAX_FRAME_BYTES as u32,
        };
        let mut conn = Connection {
            reader: BufReader::with_capacity(
                READ_BUFFER_BYTES,
                Socket::new(stream.try_clone()?, options.busy_poll, timeout),
            ),
            writer: Socket::new(stream, options.busy_poll, timeout),
            hello: placeholder,
        };
        let id = *next_id;
        *next_id += 1;
        let request = Request::Hello(Hello {
            min_version: PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client: options.client_name.clone(),
            token: options.token.clone(),
        });
        let mut out = Vec::new();
        message::encode_request(id, &request, &mut out)?;
        conn.writer.write_all(&out)?;
        let (header, body) = conn.read_frame()?;
        match decode_reply(Opcode::Hello, &header, body)? {
            Reply::Hello(h) if h.version == PROTOCOL_VERSION => {
                conn.hello = h;
                Ok(conn)
            }
            Reply::Hello(h) => Err(ClientError::Protocol(format!(
                "the server chose version {}",
                h.version
            ))),
            other => Err(unexpected(&other)),
        }
    }

    /// Reads one whole reply frame. A streamed reply (frames with `MORE`)
    /// is read to its end so the stream stays in step, then refused: no
    /// version 1 operation streams.
    fn read_frame(&mut self) -> Result<(FrameHeader, Body), ClientError> {
        let (header, body) = self.read_one()?;
        if header.flags & flags::MORE == 0 {
            return Ok((header, body));
        }
        loop {
            let (h, _) = self.read_one()?;
            if h.request_id == header.request_id && h.flags & flags::MORE == 0 {
                return Err(ClientError::Protocol(
                    "a streamed reply to an operation that does not stream".into(),
                ));
            }
        }
    }

    fn read_one(&mut self) -> Result<(FrameHeader, Body), ClientError> {
        let mut raw = [0u8; HEADER_LEN];
        self.reader.read_exact(&mut raw)?;
        let max = (self.hello.max_frame as usize).max(DEFAULT_MAX_FRAME_BYTES);
        let header =
            FrameHeader::decode(&raw, max).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if header.flags & flags::REPLY == 0 {
            return Err(ClientError::Protocol(
                "a server frame without the REPLY flag".into(),
            ));
        }
        let body = Body::filled_by(header.body_len as usize, |b| self.reader.read_exact(b))?;
        Ok((header, body))
    }
}

/// A TCP stream that, in busy-poll mode, is non-blocking and spins on
/// `WouldBlock` until the operation's timeout; otherwise plain blocking I/O
/// with socket timeouts.
struct Socket {
    stream: TcpStream,
    busy_poll: bool,
    timeout: Duration,
}

impl Socket {
    fn new(stream: TcpStream, busy_poll: bool, timeout: Duration) -> Socket {
        Socket {
            stream,
            busy_poll,
            timeout,
        }
    }

    /// Runs `op` until it does not block, or the timeout passes.
    fn spin<T>(&mut self, mut op: impl FnMut(&mut TcpStream) -> io::Result<T>) -> io::Result<T> {
        if !self.busy_poll {
            // A socket timeout surfaces as WouldBlock on Linux.
            return op(&mut self.stream).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    io::Error::new(io::ErrorKind::TimedOut, "timed out waiting for the server")
                }
                _ => e,
            });
        }
        let start = std::time::Instant::now();
        loop {
            match op(&mut self.stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() > self.timeout {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "timed out waiting for the server",
                        ));
                    }
                    std::hint::spin_loop();
                }
                other => return other,
            }
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.spin(|s| s.read(buf))
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spin(|s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
