//! The protocol's limits, as named constants. `docs/protocol.md` lists the
//! same table; a request over one gets `LIMIT_EXCEEDED` (or, for the frame
//! size, `FRAME_TOO_LARGE`, which closes the connection).

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 24;
/// Default maximum frame size, header included. The server's
/// `max_frame_bytes` setting changes it; `HELLO` tells the client.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;
/// Largest frame size a server may be configured with: `body_len` is a u32.
pub const MAX_FRAME_BYTES_LIMIT: usize = u32::MAX as usize;
/// Smallest frame size a server may be configured with. (Clients read
/// replies of up to the larger of this and [`DEFAULT_MAX_FRAME_BYTES`],
/// so a long error message always gets through.)
pub const MIN_FRAME_BYTES: usize = 4096;
/// Largest `PING` payload.
pub const MAX_PING_BYTES: usize = 1024;
/// Most parts in one slate.
pub const MAX_SLATE_PARTS: usize = 16;
/// Most keys in one slate, over all its parts.
pub const MAX_SLATE_KEYS: usize = 4096;
/// Most rows in one `PUT` or `IMPORT_ROWS`, and keys in one `DELETE`.
pub const MAX_PUT_ROWS: usize = 65_536;
/// Most values in one `PUT` (rows × columns): a decoded
/// value takes up to 32 bytes however few the wire spent on it, so this
/// bounds a batch's memory (32 MiB) whatever the frame holds.
pub const MAX_BATCH_VALUES: usize = 1 << 20;
/// Most versions one `HISTORY` reply carries; narrow the range for more.
pub const MAX_HISTORY_VERSIONS: usize = 100_000;
/// Most cells (rows × columns) of one slate reply part.
pub const MAX_SLATE_CELLS: usize = 1 << 20;
/// Most key columns of an entity.
pub const MAX_KEY_COLUMNS: usize = 4;
/// Longest group, feature or column name, in bytes.
pub const MAX_NAME_BYTES: usize = 63;
/// Most lookups in one `PIT_LOOKUP`.
pub const MAX_PIT_KEYS: usize = 4096;
/// Most rows in one `EXPORT` chunk (a chunk also ends once its stored
/// rows pass a quarter of the frame limit).
pub const MAX_EXPORT_CHUNK_ROWS: usize = 16_384;
