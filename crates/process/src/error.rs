//! What ends a call: the program broke the protocol, a limit was hit, it went away, or the
//! deadline passed. Every variant is the program's doing (or the clock's); none stops the
//! host. After any of them the process must be killed: its stream may be mid-frame.

/// Why a header section was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("a header line ends in LF without CR")]
    MissingCr,
    #[error("a header line holds a byte that is not printable ASCII")]
    NotAscii,
    #[error("a header line is not `Name: value`")]
    NoColon,
    #[error("unknown header {0:?} (only Content-Length and Content-Type)")]
    Unknown(String),
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    #[error("Content-Length is not a decimal number of at most 64 bits")]
    BadLength,
    #[error("no Content-Length before the blank line")]
    MissingLength,
    #[error("Content-Type names a charset other than utf-8")]
    BadCharset,
}

/// Why a call ended without the program's answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame too large: declared {declared} bytes, over the limit of {limit}")]
    FrameTooLarge { declared: u64, limit: usize },
    #[error("header line longer than {limit} bytes")]
    HeaderLineTooLong { limit: usize },
    #[error("malformed header: {0}")]
    MalformedHeader(HeaderError),
    #[error("frame is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("JSON nested deeper than {limit}")]
    TooDeep { limit: u32 },
    #[error("frame is not JSON: {0}")]
    InvalidJson(String),
    #[error("not a JSON-RPC 2.0 message: {0}")]
    InvalidMessage(String),
    #[error("unexpected response id {got} (waiting for {expected})")]
    UnexpectedResponseId { expected: u64, got: String },
    #[error("more than {limit} messages in one call")]
    TooManyMessages { limit: u32 },
    #[error("more than {per_second} host requests per second")]
    RateExceeded { per_second: u32 },
    #[error("the process closed stdout before answering")]
    Closed,
    #[error("the process closed stdout mid-frame ({got} of {expected} bytes)")]
    ClosedMidFrame { expected: u64, got: u64 },
    #[error("the process closed stdout mid-header")]
    ClosedMidHeader,
    #[error("the process closed stdin")]
    StdinClosed,
    #[error("the call's deadline passed")]
    Deadline,
    #[error("an earlier call on this session failed; the process must be replaced")]
    Broken,
    #[error("I/O error on the process's pipes: {0}")]
    Io(String),
}

impl ProtocolError {
    pub(crate) fn write(e: &std::io::Error) -> ProtocolError {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe => ProtocolError::StdinClosed,
            _ => ProtocolError::Io(e.to_string()),
        }
    }
}
