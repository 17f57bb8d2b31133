//! One client connection: frames in, replies out, in order.
//!
//! Requests on a connection are read and executed one after another;
//! clients pipeline by sending more before the replies arrive. Replies are
//! built in one output buffer and written straight from it (no second copy)
//! when no further whole request is already buffered or the buffer passes
//! [`WRITE_BATCH_BYTES`], so a pipelined burst costs few writes. Memory per
//! connection is bounded: one request body (at most the frame limit), the
//! output buffer (a batch plus one reply, refused past the frame limit) and
//! a fixed-size read buffer; a connection quiet for [`IDLE_RELEASE`] gives
//! all three back until it sends again. A client that stops reading blocks its own
//! connection's writes, and so its reads: nothing queues up. A body is
//! read into memory as it arrives, so a header alone, whatever size it
//! declares, costs nothing.
//!
//! Time limits: a connection must complete its `HELLO` within
//! [`FRAME_TIMEOUT`] of connecting, and each later frame within
//! [`FRAME_TIMEOUT`] (plus a second per [`MIN_BODY_BYTES_PER_S`] of body)
//! of its first byte; between frames it may idle up to the idle timeout,
//! which also caps both. So a client trickling bytes (a slowloris) or
//! sending half a frame holds its connection for seconds, not forever.
//!
//! Fairness: a connection working through pipelined requests yields to
//! the runtime once it has run [`FAIR_SLICE`] since it last had to wait for
//! input (refilling its read buffer from bytes already in the socket does
//! not count as waiting), so a flood on one connection delays the others'
//! requests by a slice, not by its whole burst. From then on, until it
//! waits for input again, it is bursting and passes the
//! [`burst`](super::burst) gate before each request, so floods on many
//! connections together keep at most all workers but one.
//!
//! Reads run on the async worker (a slate takes microseconds). Writes and
//! registry applies, which wait for fsync, and the long reads of the
//! offline tools run off the workers so they never stall other
//! connections: writes a few nice levels below reads, the offline tools'
//! work further below (see [`bulk`]). An `EXPORT` streams its chunks one
//! at a time, each written before the next is built, so a slow reader
//! slows only its export.

use super::auth::Session;
use super::bulk;
use super::burst::releasing_on_wait;
use super::export::Export;
use super::import::{self, Imports};
use super::service::{fail, Failure};
use super::Shared;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera_protocol::{
    encode_error, encode_reply, ErrorBody, ErrorCode, FrameHeader, HelloReply, ImportBegin,
    ImportBegun, ImportRows, Opcode, Reply, Request, HEADER_LEN, PROTOCOL_VERSION,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Read buffer on our side of each connection.
const READ_BUFFER_BYTES: usize = 64 << 10;
/// Replies are written once this many bytes are queued, even while more
/// pipelined requests wait.
const WRITE_BATCH_BYTES: usize = 64 << 10;
/// First allocation of a request body's buffer; it doubles as more arrives.
const BODY_FIRST_BYTES: usize = 64 << 10;
/// Largest request body buffer a connection keeps between requests.
const KEPT_BODY_BYTES: usize = 4 << 20;
/// Largest frame accepted before `HELLO`: room for any token and client
/// name, so an unauthenticated client cannot make the server allocate much.
const MAX_UNAUTHENTICATED_FRAME_BYTES: usize = 64 << 10;
/// Longest a new connection may take to complete its `HELLO`, and a frame
/// to arrive once its first byte has (the idle timeout, if shorter, bounds
/// both).
pub(super) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// Slowest rate a large body may arrive at: each such many bytes the header
/// declares add a second to its frame's deadline.
pub(super) const MIN_BODY_BYTES_PER_S: u64 = 1 << 20;
/// A connection with pipelined requests still buffered yields to the
/// runtime once it has run this long, so that other connections' requests
/// (and the I/O driver) get their turn.
const FAIR_SLICE: Duration = Duration::from_micros(200);
/// A connection quiet this long gives back its read, output and body
/// buffers until it sends again.
const IDLE_RELEASE: Duration = Duration::from_secs(1);
/// How long, and how much input, a closing connection discards so that its
/// last error frame is not destroyed by a reset.
const LINGER_TIME: Duration = Duration::from_millis(200);
const LINGER_MAX_BYTES: usize = 1 << 20;

/// What the connection does after a request.
enum Next {
    Continue,
    /// The error closes the connection (after it is sent).
    Close,
}

/// Serves one connection until the client leaves, an unrecoverable frame
/// error, the idle timeout, or shutdown.
pub(super) async fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let (rd, wr) = stream.into_split();
    // No buffer until the client sends something.
    let mut input = Input::Bare(rd);
    let mut writer = wr;
    let mut conn = Connection {
        shared,
        session: None,
        out: Vec::new(),
        imports: Imports::default(),
        export: None,
        body: Vec::new(),
    };
    let idle = conn.shared.config.idle_timeout;
    let frame_timeout = FRAME_TIMEOUT.min(idle);
    let hello_deadline = Instant::now() + frame_timeout;
    let mut stopping = false;
    let mut slice_start = Instant::now();
    // Bursting: past a whole slice of pipelined requests without waiting
    // for input; each further request then needs a burst permit.
    let mut bursting = false;
    let mut permit = None;
    loop {
        // After shutdown began, requests already received in full are
        // still answered; nothing more is read from the socket.
        if stopping && !holds_complete_frame(input.buffer()) {
            break;
        }
        // Wait for the next frame's first byte: up to the idle timeout, or
        // until the HELLO deadline on a connection that has not said it.
        let wait = match conn.session {
            None => hello_deadline.saturating_duration_since(Instant::now()),
            Some(_) => idle,
        };
        let (first, waited) = tokio::select! {
            r = releasing_on_wait(input.first_byte(wait, &mut conn), &mut permit) => r,
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                continue;
            }
        };
        // A clean close, a reset, or an idle client: nothing to answer.
        let Some(reader) = first else {
            break;
        };
        // The slice counts the time the connection has kept its worker:
        // it restarts only when the connection had to wait for input (a
        // refill of the read buffer from data already in the socket does
        // not give the worker away).
        if waited {
            slice_start = Instant::now();
            bursting = false;
        }
        let started = Instant::now();
        let deadline = match conn.session {
            None => hello_deadline,
            Some(_) => started + frame_timeout,
        };
        // Waits below (for the rest of a frame, for the socket to take
        // replies, for a write's fsync) give back a burst permit, so a
        // bursting client that stalls cannot hold the gate shut.
        let mut header = [0u8; HEADER_LEN];
        let header_read = tokio::time::timeout_at(deadline.into(), reader.read_exact(&mut header));
        match releasing_on_wait(header_read, &mut permit).await.0 {
            Ok(Ok(_)) => {}
            // Half a header within the deadline: a slow or stalled sender.
            Ok(Err(_)) | Err(_) => break,
        }
        let frame = conn.read_frame(&header, reader, started, deadline);
        let next = match releasing_on_wait(frame, &mut permit).await.0 {
            Ok((h, body)) => {
                if bursting && permit.is_none() {
                    permit = conn.shared.bursts.enter().await;
                    slice_start = Instant::now();
                }
                let handled = conn.handle(h, &body, Instant::now());
                let (next, _) = releasing_on_wait(handled, &mut permit).await;
                conn.recycle(body);
                next
            }
            Err(next) => next,
        };
        // Only a whole buffered frame counts: replies must not wait while
        // the rest of a frame is still to arrive.
        let more_waiting = holds_complete_frame(reader.buffer()) && !matches!(next, Next::Close);
        let flushed = conn.flush_unless_pipelining(&mut writer, more_waiting, idle);
        if releasing_on_wait(flushed, &mut permit).await.0.is_err() {
            break;
        }
        if let Some((id, export)) = conn.export.take() {
            permit = None;
            if conn
                .stream_export(id, export, &mut writer, &shutdown, idle)
                .await
                .is_err()
            {
                break;
            }
        }
        if let Next::Close = next {
            drop(permit.take());
            linger(&mut writer, reader).await;
            break;
        }
        // Requests buffered in our reader complete without touching the
        // socket, so without this a pipelined flood would keep the worker
        // (and every other connection on it) for its whole burst.
        if more_waiting && slice_start.elapsed() >= FAIR_SLICE {
            bursting = true;
            permit = None;
            tokio::task::yield_now().await;
            slice_start = Instant::now();
        }
    }
    // Replies still queued behind pipelined requests go out before the
    // connection closes.
    let _ = conn.flush_unless_pipelining(&mut writer, false, idle).await;
    if let Some(peer) = peer {
        tracing::debug!(%peer, "connection closed");
    }
}

/// The connection's input: buffered while the client is active, bare (no
/// buffer) until it first sends and again once it has been quiet for
/// [`IDLE_RELEASE`], so thousands of idle connections hold no buffers.
enum Input {
    Buffered(BufReader<OwnedReadHalf>),
    Bare(OwnedReadHalf),
    /// Only while switching between the two.
    Switching,
}

impl Input {
    /// Bytes received and not yet consumed.
    fn buffer(&self) -> &[u8] {
        match self {
            Input::Buffered(r) => r.buffer(),
            Input::Bare(_) | Input::Switching => &[],
        }
    }

    /// Waits up to `wait` for at least one byte; `None` on a close, an
    /// error or the timeout. A connection quiet for [`IDLE_RELEASE`] drops
    /// its read buffer and `conn`'s output and body buffers while it waits
    /// on. Cancel-safe: no byte is lost if the future is dropped.
    async fn first_byte(
        &mut self,
        wait: Duration,
        conn: &mut Connection,
    ) -> Option<&mut BufReader<OwnedReadHalf>> {
        let deadline = tokio::time::Instant::now() + wait;
        if let Input::Buffered(r) = self {
            if r.buffer().is_empty() {
                match tokio::time::timeout(IDLE_RELEASE.min(wait), r.fill_buf()).await {
                    Ok(Ok(bytes)) if !bytes.is_empty() => {}
                    Ok(_) => return None,
                    Err(_) => {
                        // Quiet: give the buffers back while waiting on.
                        if let Input::Buffered(r) = std::mem::replace(self, Input::Switching) {
                            *self = Input::Bare(r.into_inner());
                        }
                        conn.release_buffers();
                    }
                }
            }
        }
        if let Input::Bare(rd) = self {
            match tokio::time::timeout_at(deadline, rd.readable()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
            if let Input::Bare(rd) = std::mem::replace(self, Input::Switching) {
                *self = Input::Buffered(BufReader::with_capacity(READ_BUFFER_BYTES, rd));
            }
        }
        let Input::Buffered(r) = self else {
            return None;
        };
        match tokio::time::timeout_at(deadline, r.fill_buf()).await {
            Ok(Ok(bytes)) if !bytes.is_empty() => Some(r),
            _ => None,
        }
    }
}

/// Reads `len` bytes into the empty `body`, growing it by what has arrived
/// so far (doubling from [`BODY_FIRST_BYTES`]), never past `len`.
async fn read_body(
    reader: &mut BufReader<OwnedReadHalf>,
    len: usize,
    body: &mut Vec<u8>,
) -> std::io::Result<()> {
    while body.len() < len {
        if body.len() == body.capacity() {
            let grow = body.len().max(BODY_FIRST_BYTES).min(len - body.len());
            body.reserve_exact(grow);
        }
        let room = (body.capacity() - body.len()).min(len - body.len());
        if (&mut *reader).take(room as u64).read_buf(body).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// Whether `buf` starts with a whole frame (header and body).
fn holds_complete_frame(buf: &[u8]) -> bool {
    let Some(len) = buf.get(16..20) else {
        return false;
    };
    let body = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    buf.len() >= HEADER_LEN.saturating_add(body)
}

/// Closes after an error that ends the connection so that the error
/// frame is read: shuts down our side, then discards what the client is
/// still sending for a moment (closing with unread input would reset the
/// connection and destroy the error frame).
async fn linger(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    reader: &mut BufReader<OwnedReadHalf>,
) {
    let _ = writer.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_MAX_BYTES {
        match tokio::time::timeout(LINGER_TIME, reader.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

struct Connection {
    shared: Arc<Shared>,
    /// Shared with the requests it runs: a request takes a reference, not
    /// a copy of the identity.
    session: Option<Arc<Session>>,
    /// Replies not yet handed to the socket writer.
    out: Vec<u8>,
    /// Import sessions this connection opened; dropped (aborted) with it.
    imports: Imports,
    /// An `EXPORT` just opened, to stream once its request is handled.
    export: Option<(u64, Export)>,
    /// The last request body's buffer, reused.
    body: Vec<u8>,
}

impl Connection {
    /// Checks the header and reads the body, which must arrive by
    /// `deadline` plus a second per [`MIN_BODY_BYTES_PER_S`] of it (the
    /// frame began at `started`; the idle timeout caps the whole). A frame
    /// that cannot be trusted gets its error queued and `Err(Close)`.
    async fn read_frame(
        &mut self,
        header: &[u8; HEADER_LEN],
        reader: &mut BufReader<OwnedReadHalf>,
        started: Instant,
        deadline: Instant,
    ) -> Result<(FrameHeader, Vec<u8>), Next> {
        let max_frame = match self.session {
            Some(_) => self.shared.config.max_frame_bytes,
            None => MAX_UNAUTHENTICATED_FRAME_BYTES.min(self.shared.config.max_frame_bytes),
        };
        let h = match FrameHeader::decode(header, max_frame) {
            Ok(h) => h,
            Err(e) => {
                self.shared.log.warn(format_args!("bad frame: {e}"));
                // The id is only trusted when the magic matched.
                let id = if header[..4] == tessera_protocol::MAGIC {
                    u64::from_le_bytes(header[8..16].try_into().unwrap_or_default())
                } else {
                    0
                };
                self.error(id, header[5], None, fail(e.code(), e.to_string()));
                return Err(Next::Close);
            }
        };
        let len = h.body_len as usize;
        let slack = Duration::from_secs(u64::from(h.body_len) / MIN_BODY_BYTES_PER_S);
        let deadline = (deadline + slack).min(started + self.shared.config.idle_timeout);
        // The body buffer is reused: a fresh large buffer per request costs
        // the kernel a page-zeroing for every page of it. It grows only as
        // bytes arrive (never past `len`), so a header declaring a huge body
        // that never comes allocates nothing.
        let mut body = std::mem::take(&mut self.body);
        body.clear();
        match tokio::time::timeout_at(deadline.into(), read_body(reader, len, &mut body)).await {
            Ok(Ok(())) => {}
            // Closed mid-body, or too slow: nothing to answer.
            _ => return Err(Next::Close),
        }
        self.shared.metrics.bytes_in(HEADER_LEN + body.len());
        Ok((h, body))
    }

    /// Drops the output buffer (if nothing is queued in it) and the kept
    /// body buffer: the connection is idle.
    fn release_buffers(&mut self) {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        self.body = Vec::new();
    }

    /// Decodes, authorizes and executes one request, queuing its reply.
    /// Keeps a body's buffer for the next request, unless it is large:
    /// one big request must not pin its memory for the connection's life.
    fn recycle(&mut self, body: Vec<u8>) {
        if body.capacity() <= KEPT_BODY_BYTES {
            self.body = body;
        }
    }

    async fn handle(&mut self, h: FrameHeader, body: &[u8], received: Instant) -> Next {
        // Before HELLO nothing but a HELLO is even decoded.
        if self.session.is_none() && h.opcode != Opcode::Hello as u8 {
            let msg = "the first request on a connection must be HELLO";
            let op = Opcode::from_u8(h.opcode);
            return self.error(
                h.request_id,
                h.opcode,
                op,
                fail(ErrorCode::AuthRequired, msg),
            );
        }
        let Some(op) = Opcode::from_u8(h.opcode) else {
            let msg = format!("unknown opcode {:#04x}", h.opcode);
            return self.error(
                h.request_id,
                h.opcode,
                None,
                fail(ErrorCode::UnknownOpcode, msg),
            );
        };
        if h.flags != 0 {
            let msg = "a request frame has flags set (REPLY, ERROR and MORE are for replies)";
            return self.error(
                h.request_id,
                h.opcode,
                Some(op),
                fail(ErrorCode::BadRequest, msg),
            );
        }
        let request = match Request::decode(op, body) {
            Ok(r) => r,
            Err(e) => {
                self.shared
                    .log
                    .warn(format_args!("bad {} request: {e}", op.name()));
                // A HELLO that does not decode leaves the connection
                // unauthenticated: it closes, as any failed HELLO does.
                let code = if self.session.is_none() {
                    ErrorCode::AuthRequired
                } else {
                    e.code()
                };
                return self.error(h.request_id, h.opcode, Some(op), fail(code, e.to_string()));
            }
        };
        let (session, request) = match (&self.session, request) {
            (None, Request::Hello(hello)) => return self.hello(h.request_id, &hello),
            (None, _) => {
                let msg = "the first request on a connection must be HELLO";
                return self.error(
                    h.request_id,
                    h.opcode,
                    Some(op),
                    fail(ErrorCode::AuthRequired, msg),
                );
            }
            (Some(s), request) => (s.clone(), request),
        };
        if !session.role.permits(op) {
            let msg = format!(
                "{} may not {}: its role is {}",
                session.identity,
                op.name(),
                session.role.name()
            );
            return self.error(
                h.request_id,
                h.opcode,
                Some(op),
                fail(ErrorCode::PermissionDenied, msg),
            );
        }
        if received.elapsed() > self.shared.config.request_deadline {
            return self.error(h.request_id, h.opcode, Some(op), deadline_exceeded());
        }
        let result = match request {
            Request::ImportBegin(begin) => self.import_begin(h.request_id, &begin),
            Request::ImportRows(rows) => self.import_rows(h.request_id, rows).await,
            Request::ImportCommit { session: id } => self.import_commit(h.request_id, id).await,
            Request::ImportAbort { session: id } => self.import_abort(h.request_id, id),
            Request::Export(req) => Export::open(&self.shared.service, &req)
                .map(|export| self.export = Some((h.request_id, export))),
            Request::Stats => {
                let mut stats = self.shared.service.stats_json();
                stats["server"] = self.shared.metrics.server_json();
                encode_reply(
                    h.request_id,
                    &Reply::Stats(stats.to_string()),
                    &mut self.out,
                );
                Ok(())
            }
            request => {
                self.execute(op, &session, h.request_id, request, received)
                    .await
            }
        };
        self.shared.metrics.request(op, received.elapsed());
        match result {
            Ok(()) => Next::Continue,
            Err(f) => self.error(h.request_id, h.opcode, Some(op), f),
        }
    }

    /// Runs the request, appending its reply frame to `out` (nothing on
    /// error).
    async fn execute(
        &mut self,
        op: Opcode,
        session: &Arc<Session>,
        request_id: u64,
        request: Request,
        received: Instant,
    ) -> Result<(), Failure> {
        let start = self.out.len();
        let result = if let Some(lane) = off_worker_lane(op) {
            let shared = self.shared.clone();
            let session = session.clone();
            // The reply is built apart and appended, so a panic off the
            // workers loses no reply already queued.
            let job = move || {
                // Time spent queued for a thread counts.
                if received.elapsed() > shared.config.request_deadline {
                    return (Err(deadline_exceeded()), Vec::new());
                }
                let mut out = Vec::new();
                let r = shared
                    .service
                    .execute(&session, request_id, request, &mut out);
                (r, out)
            };
            let config = &self.shared.config;
            let joined = match lane {
                Lane::Bulk => bulk::run(config.bulk_niceness, job).await,
                Lane::Write => bulk::run(config.write_niceness, job).await,
                Lane::Blocking => tokio::task::spawn_blocking(job).await.map_err(panicked),
            };
            joined.and_then(|(r, out)| {
                self.out.extend_from_slice(&out);
                r
            })
        } else {
            self.shared
                .service
                .execute(session, request_id, request, &mut self.out)
        };
        let written = self.out.len().saturating_sub(start);
        match result {
            Ok(()) if written > self.shared.config.max_frame_bytes => {
                self.out.truncate(start);
                Err(fail(
                    ErrorCode::LimitExceeded,
                    format!(
                        "the reply would be {written} bytes, over the frame limit of {}",
                        self.shared.config.max_frame_bytes
                    ),
                ))
            }
            Ok(()) => Ok(()),
            Err(f) => {
                self.out.truncate(start);
                Err(f)
            }
        }
    }

    fn import_begin(&mut self, request_id: u64, begin: &ImportBegin) -> Result<(), Failure> {
        let shared = &self.shared;
        let (session, rate) = import::begin(
            &shared.service,
            &shared.import_slots,
            shared.config.import_max_rows_per_s,
            begin,
        )?;
        let id = self.imports.insert(session);
        encode_reply(
            request_id,
            &Reply::ImportBegin(ImportBegun {
                session: id,
                max_rows_per_s: rate,
            }),
            &mut self.out,
        );
        Ok(())
    }

    /// Takes rows as bulk work (they may spill a sorted run to disk, and
    /// pacing sleeps). A failed batch ends the session.
    async fn import_rows(&mut self, request_id: u64, rows: ImportRows) -> Result<(), Failure> {
        let id = rows.session;
        let mut session = self.imports.take(id)?;
        let (session, result) = bulk::run(self.shared.config.bulk_niceness, move || {
            let result = session.add_rows(&rows);
            (session, result)
        })
        .await?;
        let reply = result?;
        self.imports.put_back(id, session);
        encode_reply(request_id, &Reply::ImportRows(reply), &mut self.out);
        Ok(())
    }

    async fn import_commit(&mut self, request_id: u64, id: u64) -> Result<(), Failure> {
        let session = self.imports.take(id)?;
        let niceness = self.shared.config.bulk_niceness;
        let committed = bulk::run(niceness, move || session.commit()).await??;
        encode_reply(request_id, &Reply::ImportCommit(committed), &mut self.out);
        Ok(())
    }

    fn import_abort(&mut self, request_id: u64, id: u64) -> Result<(), Failure> {
        drop(self.imports.take(id)?);
        encode_reply(request_id, &Reply::ImportAbort, &mut self.out);
        Ok(())
    }

    /// Streams an export's chunks, each built as bulk work and written
    /// before the next. A failure, or the server shutting down,
    /// ends the stream with an error frame; the connection stays open.
    async fn stream_export(
        &mut self,
        request_id: u64,
        mut export: Export,
        writer: &mut tokio::net::tcp::OwnedWriteHalf,
        shutdown: &watch::Receiver<bool>,
        idle: Duration,
    ) -> std::io::Result<()> {
        let max_reply = self.shared.service.max_reply_bytes();
        loop {
            if *shutdown.borrow() {
                let f = fail(ErrorCode::Unavailable, "the server is shutting down");
                self.error(request_id, Opcode::Export as u8, Some(Opcode::Export), f);
                return self.flush_unless_pipelining(writer, false, idle).await;
            }
            let joined = bulk::run(self.shared.config.bulk_niceness, move || {
                let mut out = Vec::new();
                let result = export.next_chunk(request_id, max_reply, &mut out);
                (export, result, out)
            })
            .await;
            let failure = match joined {
                Ok((next, Ok(last), mut out)) => {
                    if self.out.is_empty() {
                        // The chunk is sent from its own buffer, uncopied.
                        std::mem::swap(&mut self.out, &mut out);
                    } else {
                        self.out.extend_from_slice(&out);
                    }
                    self.flush_unless_pipelining(writer, false, idle).await?;
                    if last {
                        return Ok(());
                    }
                    export = next;
                    continue;
                }
                Ok((_, Err(f), _)) | Err(f) => f,
            };
            self.error(
                request_id,
                Opcode::Export as u8,
                Some(Opcode::Export),
                failure,
            );
            return self.flush_unless_pipelining(writer, false, idle).await;
        }
    }

    fn hello(&mut self, request_id: u64, hello: &tessera_protocol::Hello) -> Next {
        let op = Some(Opcode::Hello);
        if hello.min_version > PROTOCOL_VERSION || hello.max_version < PROTOCOL_VERSION {
            let msg = format!(
                "this server speaks protocol version {PROTOCOL_VERSION}; the client asked for {}..={}",
                hello.min_version, hello.max_version
            );
            return self.error(
                request_id,
                Opcode::Hello as u8,
                op,
                fail(ErrorCode::UnsupportedVersion, msg),
            );
        }
        let Some(session) = self.shared.auth.authenticate(&hello.token) else {
            self.shared.log.warn(format_args!(
                "authentication failed for client `{}`",
                hello.client
            ));
            let msg = "authentication failed: unknown token";
            return self.error(
                request_id,
                Opcode::Hello as u8,
                op,
                fail(ErrorCode::AuthFailed, msg),
            );
        };
        let reply = Reply::Hello(HelloReply {
            version: PROTOCOL_VERSION,
            role: session.role,
            identity: session.identity.clone(),
            server: format!("tessera {}", env!("CARGO_PKG_VERSION")),
            max_frame: u32::try_from(self.shared.config.max_frame_bytes).unwrap_or(u32::MAX),
        });
        encode_reply(request_id, &reply, &mut self.out);
        self.session = Some(Arc::new(session));
        Next::Continue
    }

    /// Queues an error reply; says whether it closes the connection.
    fn error(&mut self, request_id: u64, opcode: u8, op: Option<Opcode>, f: ErrorBody) -> Next {
        self.shared.metrics.error(op, f.code);
        let closes = f.code.closes_connection();
        encode_error(request_id, opcode, &f, &mut self.out);
        if closes {
            Next::Close
        } else {
            Next::Continue
        }
    }

    /// Writes queued replies unless more requests are already buffered
    /// (`more_waiting`: the client is pipelining) and the batch is under
    /// [`WRITE_BATCH_BYTES`]. A client that does not read for `timeout`
    /// loses its connection: it cannot pin a task and its buffer forever.
    async fn flush_unless_pipelining(
        &mut self,
        writer: &mut tokio::net::tcp::OwnedWriteHalf,
        more_waiting: bool,
        timeout: Duration,
    ) -> std::io::Result<()> {
        if self.out.is_empty() || (more_waiting && self.out.len() < WRITE_BATCH_BYTES) {
            return Ok(());
        }
        self.shared.metrics.bytes_out(self.out.len());
        match tokio::time::timeout(timeout, writer.write_all(&self.out)).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client stopped reading its replies",
                ))
            }
        }
        self.out.clear();
        if self.out.capacity() > 4 * WRITE_BATCH_BYTES {
            // One large reply must not pin its buffer for the connection's life.
            self.out = Vec::with_capacity(WRITE_BATCH_BYTES);
        }
        Ok(())
    }
}

/// A request whose blocking-pool task panicked or was cancelled.
fn panicked(e: tokio::task::JoinError) -> Failure {
    fail(ErrorCode::Internal, format!("the request failed: {e}"))
}

fn deadline_exceeded() -> Failure {
    fail(
        ErrorCode::DeadlineExceeded,
        "the request waited past the server's deadline",
    )
}

/// Where an operation that does not run on its connection's worker runs.
enum Lane {
    /// A thread `bulk_niceness` levels below serving.
    Bulk,
    /// A thread `write_niceness` levels below serving: reads come first,
    /// and a batch of writes takes what the cores have left, or its share
    /// when they are busy.
    Write,
    /// tokio's blocking pool, at the server's priority.
    Blocking,
}

/// The lane of an operation that must not run on a worker, or `None` for
/// one that does. Writes wait for fsync under `sync` durability and a
/// registry apply for a file write; a `PIT_LOOKUP`'s thousands of reads
/// would hold up the worker's other connections for milliseconds and are
/// a training-set join's bulk work.
fn off_worker_lane(op: Opcode) -> Option<Lane> {
    match op {
        Opcode::Put | Opcode::Delete => Some(Lane::Write),
        Opcode::PitLookup => Some(Lane::Bulk),
        Opcode::RegistryApply => Some(Lane::Blocking),
        _ => None,
    }
}
