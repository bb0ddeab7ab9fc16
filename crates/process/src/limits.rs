//! What one call may cost the host: frame size, header line, JSON nesting, messages, host
//! request rate, captured stderr. Every limit has a default and a ceiling; a value outside
//! `1..=ceiling` is refused when set, so a `Limits` always holds a usable configuration.

/// Largest frame body (bytes) by default: 1 MiB. Refused at the `Content-Length` line, before
/// a byte of the body is read or allocated.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 20;
/// Ceiling of [`Limits::with_max_frame_bytes`]: 64 MiB. A frame is held whole in memory
/// while it is parsed, so this bounds a call's buffer.
pub const MAX_FRAME_BYTES_CEILING: usize = 64 << 20;

/// Longest header line (bytes, CRLF included) by default. The only headers are
/// `Content-Length` and `Content-Type`, which fit in far less.
pub const DEFAULT_MAX_HEADER_LINE: usize = 1024;
/// Ceiling of [`Limits::with_max_header_line`].
pub const MAX_HEADER_LINE_CEILING: usize = 64 * 1024;

/// Deepest nesting of arrays and objects by default.
pub const DEFAULT_MAX_DEPTH: u32 = 64;
/// Ceiling of [`Limits::with_max_depth`]: below serde_json's own recursion limit (128), so
/// the pre-scan, not the parser, is what refuses deep input, with a clear error.
pub const MAX_DEPTH_CEILING: u32 = 100;

/// Messages the program may send during one call by default (host requests, notifications
/// and the final response).
pub const DEFAULT_MAX_MESSAGES: u32 = 4096;
/// Ceiling of [`Limits::with_max_messages`].
pub const MAX_MESSAGES_CEILING: u32 = 1 << 20;

/// Host requests per second by default (a token bucket holding one second's worth, full at
/// the start of each call unless the session shares a [`crate::RequestBudget`]).
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: u32 = 1000;
/// Ceiling of [`Limits::with_max_requests_per_second`].
pub const MAX_REQUESTS_PER_SECOND_CEILING: u32 = 1_000_000;

/// Captured stderr by default (bytes); more is read and dropped, 64 KiB every 10 ms, so a
/// chatty program goes on (a little slower) rather than blocking for ever on a full pipe.
pub const DEFAULT_MAX_STDERR_BYTES: usize = 64 * 1024;
/// Ceiling of [`Limits::with_max_stderr_bytes`].
pub const MAX_STDERR_BYTES_CEILING: usize = 16 << 20;

/// The protocol's limits for one call. [`Limits::default`] gives every default above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    max_frame_bytes: usize,
    max_header_line: usize,
    max_depth: u32,
    max_messages: u32,
    max_requests_per_second: u32,
    max_stderr_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_header_line: DEFAULT_MAX_HEADER_LINE,
            max_depth: DEFAULT_MAX_DEPTH,
            max_messages: DEFAULT_MAX_MESSAGES,
            max_requests_per_second: DEFAULT_MAX_REQUESTS_PER_SECOND,
            max_stderr_bytes: DEFAULT_MAX_STDERR_BYTES,
        }
    }
}

/// A limit set to zero or above its ceiling.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name} must be between {min} and {ceiling}, not {value}")]
pub struct LimitError {
    pub name: &'static str,
    pub min: u64,
    pub value: u64,
    pub ceiling: u64,
}

fn check<T: Into<u64> + Copy>(name: &'static str, value: T, ceiling: T) -> Result<T, LimitError> {
    check_min(name, value, 1u8.into(), ceiling)
}

fn check_min<T: Into<u64> + Copy>(
    name: &'static str,
    value: T,
    min: u64,
    ceiling: T,
) -> Result<T, LimitError> {
    let (v, c) = (value.into(), ceiling.into());
    if v < min || v > c {
        return Err(LimitError {
            name,
            min,
            value: v,
            ceiling: c,
        });
    }
    Ok(value)
}

fn usize_check(
    name: &'static str,
    value: usize,
    min: u64,
    ceiling: usize,
) -> Result<usize, LimitError> {
    // Both fit in u64 on every supported target; saturate rather than trust that.
    let v = u64::try_from(value).unwrap_or(u64::MAX);
    let c = u64::try_from(ceiling).unwrap_or(u64::MAX);
    check_min(name, v, min, c).map(|_| value)
}

/// The shortest usable header line: `Content-Length: 1\r\n`.
pub const MIN_HEADER_LINE: usize = 19;

impl Limits {
    pub fn with_max_frame_bytes(mut self, n: usize) -> Result<Self, LimitError> {
        self.max_frame_bytes = usize_check("max_frame_bytes", n, 1, MAX_FRAME_BYTES_CEILING)?;
        Ok(self)
    }
    pub fn with_max_header_line(mut self, n: usize) -> Result<Self, LimitError> {
        self.max_header_line = usize_check(
            "max_header_line",
            n,
            MIN_HEADER_LINE as u64,
            MAX_HEADER_LINE_CEILING,
        )?;
        Ok(self)
    }
    pub fn with_max_depth(mut self, n: u32) -> Result<Self, LimitError> {
        self.max_depth = check("max_depth", n, MAX_DEPTH_CEILING)?;
        Ok(self)
    }
    pub fn with_max_messages(mut self, n: u32) -> Result<Self, LimitError> {
        self.max_messages = check("max_messages", n, MAX_MESSAGES_CEILING)?;
        Ok(self)
    }
    pub fn with_max_requests_per_second(mut self, n: u32) -> Result<Self, LimitError> {
        self.max_requests_per_second = check(
            "max_requests_per_second",
            n,
            MAX_REQUESTS_PER_SECOND_CEILING,
        )?;
        Ok(self)
    }
    pub fn with_max_stderr_bytes(mut self, n: usize) -> Result<Self, LimitError> {
        self.max_stderr_bytes = usize_check("max_stderr_bytes", n, 1, MAX_STDERR_BYTES_CEILING)?;
        Ok(self)
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }
    pub fn max_header_line(&self) -> usize {
        self.max_header_line
    }
    pub fn max_depth(&self) -> u32 {
        self.max_depth
    }
    pub fn max_messages(&self) -> u32 {
        self.max_messages
    }
    pub fn max_requests_per_second(&self) -> u32 {
        self.max_requests_per_second
    }
    pub fn max_stderr_bytes(&self) -> usize {
        self.max_stderr_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_above_ceiling_are_refused() {
        let l = Limits::default();
        assert_eq!(
            l.with_max_frame_bytes(0).unwrap_err().to_string(),
            "max_frame_bytes must be between 1 and 67108864, not 0"
        );
        assert!(l.with_max_frame_bytes(MAX_FRAME_BYTES_CEILING + 1).is_err());
        assert!(l.with_max_depth(101).is_err());
        assert!(l.with_max_messages(0).is_err());
        assert!(l.with_max_requests_per_second(0).is_err());
        assert_eq!(l.with_max_depth(100).unwrap().max_depth(), 100);
        assert!(l.with_max_header_line(MIN_HEADER_LINE - 1).is_err());
        assert!(l.with_max_header_line(MIN_HEADER_LINE).is_ok());
    }
}
