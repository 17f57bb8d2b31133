//! Error codes on the wire, and the ways encoding and decoding fail.

use std::fmt;

/// An error reply's code (`docs/protocol.md`, "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Malformed header or magic.
    BadFrame = 1,
    /// No common protocol version.
    UnsupportedVersion = 2,
    /// `body_len` over the connection's limit.
    FrameTooLarge = 3,
    /// The first request was not `HELLO`.
    AuthRequired = 4,
    /// Unknown token.
    AuthFailed = 5,
    /// The role does not permit the operation.
    PermissionDenied = 6,
    /// No such operation.
    UnknownOpcode = 7,
    /// The body does not decode.
    BadRequest = 8,
    /// No such feature group.
    UnknownGroup = 9,
    /// No such feature in the group.
    UnknownFeature = 10,
    /// A row, key or spec breaks a rule.
    Validation = 11,
    /// `expected_version` is not the registry's current version.
    StaleRegistry = 12,
    /// Too many keys, parts, rows...
    LimitExceeded = 13,
    /// The engine refuses writes after a durability failure.
    ReadOnly = 14,
    /// The request waited past the server's deadline.
    DeadlineExceeded = 15,
    /// Connection limit reached, or shutting down.
    Unavailable = 16,
    /// A server-side failure (I/O, corruption).
    Internal = 17,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadFrame,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::AuthRequired,
        ErrorCode::AuthFailed,
        ErrorCode::PermissionDenied,
        ErrorCode::UnknownOpcode,
        ErrorCode::BadRequest,
        ErrorCode::UnknownGroup,
        ErrorCode::UnknownFeature,
        ErrorCode::Validation,
        ErrorCode::StaleRegistry,
        ErrorCode::LimitExceeded,
        ErrorCode::ReadOnly,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code with wire value `v`.
    pub fn from_u16(v: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| *c as u16 == v)
    }

    /// The code's name as the spec writes it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "BAD_FRAME",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::AuthFailed => "AUTH_FAILED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::UnknownOpcode => "UNKNOWN_OPCODE",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnknownGroup => "UNKNOWN_GROUP",
            ErrorCode::UnknownFeature => "UNKNOWN_FEATURE",
            ErrorCode::Validation => "VALIDATION",
            ErrorCode::StaleRegistry => "STALE_REGISTRY",
            ErrorCode::LimitExceeded => "LIMIT_EXCEEDED",
            ErrorCode::ReadOnly => "READ_ONLY",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Whether the server closes the connection after sending this error.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            ErrorCode::BadFrame
                | ErrorCode::UnsupportedVersion
                | ErrorCode::FrameTooLarge
                | ErrorCode::AuthRequired
                | ErrorCode::AuthFailed
                | ErrorCode::Unavailable
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An error reply's body: a code and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What went wrong, naming the row, column, file... it concerns.
    pub message: String,
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// Why a body does not decode. Decoding never panics, and its allocations
/// are bounded by the body's size and the protocol's batch limits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A field runs past the end of the body.
    #[error("truncated: {what} runs past the end of the body")]
    Truncated {
        /// The field.
        what: &'static str,
    },
    /// Bytes are left after the last field.
    #[error("{extra} bytes left over after the body")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// A string is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        what: &'static str,
    },
    /// An enum field holds a value the protocol does not define.
    #[error("{what}: unknown value {value}")]
    UnknownValue {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A reserved field or padding is not zero.
    #[error("{what} is reserved and must be zero")]
    Reserved {
        /// The field.
        what: &'static str,
    },
    /// A field breaks a rule of the layout (offsets out of order...).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The field.
        what: &'static str,
        /// The broken rule.
        reason: &'static str,
    },
    /// A count over one of the protocol's limits.
    #[error("{what}: {found} is over the limit of {limit}")]
    LimitExceeded {
        /// What is counted.
        what: &'static str,
        /// The count.
        found: usize,
        /// The limit.
        limit: usize,
    },
}

impl DecodeError {
    /// The error code the server answers this with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            _ => ErrorCode::BadRequest,
        }
    }
}

/// Why a request cannot be encoded: a field is longer than its length
/// prefix can say. Nothing is written then.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {len} is more than its length prefix holds ({max})")]
pub struct EncodeError {
    /// The field.
    pub what: &'static str,
    /// Its length or count.
    pub len: usize,
    /// The most its prefix holds.
    pub max: usize,
}
