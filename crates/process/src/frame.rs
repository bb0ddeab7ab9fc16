//! `Content-Length` framing, as LSP: `Content-Length: N\r\n` (optionally `Content-Type: ...\r\n`),
//! a blank line `\r\n`, then N bytes of UTF-8 JSON.
//!
//! Strict on purpose: header names are matched without regard to ASCII case, but any other
//! header, a duplicate, a length that is not plain decimal digits, a line ending in bare LF,
//! a byte outside printable ASCII and a line over the limit all end the call. The declared
//! length is checked against the limit on its own line, before the blank line and before a byte
//! of the body is read or allocated; the buffer never holds more than one header line or one
//! body plus one read's worth of bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{HeaderError, ProtocolError};
use crate::limits::Limits;

/// Bytes asked of the pipe per read.
const CHUNK: usize = 64 * 1024;

/// One parsed header line.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    Length(u64),
    ContentType,
}

/// Parses one header line without its CRLF.
fn parse_header(line: &[u8], limits: &Limits) -> Result<Header, ProtocolError> {
    let bad = |e| Err(ProtocolError::MalformedHeader(e));
    if line
        .iter()
        .any(|&b| !(b == b'\t' || (b' '..=b'~').contains(&b)))
    {
        return bad(HeaderError::NotAscii);
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return bad(HeaderError::NoColon);
    };
    let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
    if name.eq_ignore_ascii_case(b"content-length") {
        let length =
            parse_length(value).ok_or(ProtocolError::MalformedHeader(HeaderError::BadLength))?;
        let limit = limits.max_frame_bytes();
        if usize::try_from(length).map_or(true, |n| n > limit) {
            return Err(ProtocolError::FrameTooLarge {
                declared: length,
                limit,
            });
        }
        Ok(Header::Length(length))
    } else if name.eq_ignore_ascii_case(b"content-type") {
        // The value is otherwise free (LSP sends `application/vscode-jsonrpc; charset=utf-8`),
        // but a frame is always UTF-8: another charset is a lie about the body.
        let v = String::from_utf8_lossy(value).to_ascii_lowercase();
        for param in v.split(';').skip(1) {
            if let Some(cs) = param.trim().strip_prefix("charset=") {
                let cs = cs.trim_matches('"');
                if cs != "utf-8" && cs != "utf8" {
                    return bad(HeaderError::BadCharset);
                }
            }
        }
        Ok(Header::ContentType)
    } else {
        let shown: String = String::from_utf8_lossy(name).chars().take(64).collect();
        bad(HeaderError::Unknown(shown))
    }
}

/// Spaces and tabs around a header value (HTTP's optional white space).
fn trim_ows(v: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !is_ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// One or more ASCII digits, no sign, fitting in a u64.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Reads frames from the program's stdout, keeping bytes past a frame for the next one.
#[derive(Debug)]
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// `buf[start..]` is unread.
    start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Whether nothing is waiting to be read: no byte left in the buffer, and none ready on
    /// the stream (polled once, never waited for). End of stream counts as not quiet.
    pub(crate) async fn is_quiet(&mut self) -> bool {
        if self.start < self.buf.len() {
            return false;
        }
        let mut one = [0u8; 1];
        let mut read = std::pin::pin!(tokio::io::AsyncReadExt::read(&mut self.inner, &mut one));
        let ready = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
        matches!(ready, std::task::Poll::Pending)
    }

    pub(crate) fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            start: 0,
        }
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Reads at most `want` more bytes (at least one unless at EOF); returns how many.
    async fn fill(&mut self, want: usize) -> Result<usize, ProtocolError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + want.max(1), 0);
        let got = loop {
            match self.inner.read(&mut self.buf[old..]).await {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(ProtocolError::Io(e.to_string()));
                }
            }
        };
        self.buf.truncate(old + got);
        Ok(got)
    }

    /// The next frame's body. `Closed` when stdout ends cleanly between frames.
    pub(crate) async fn read_frame(&mut self, limits: &Limits) -> Result<Vec<u8>, ProtocolError> {
        let length = self.read_header(limits).await?;
        // `length` was checked against the frame limit, so it fits in usize.
        let length_usize = usize::try_from(length).map_err(|_| ProtocolError::FrameTooLarge {
            declared: length,
            limit: limits.max_frame_bytes(),
        })?;
        while self.unread().len() < length_usize {
            let missing = length_usize - self.unread().len();
            // In steps, so a declared frame costs memory only as its bytes arrive.
            if self.fill(missing.min(CHUNK)).await? == 0 {
                return Err(ProtocolError::ClosedMidFrame {
                    expected: length,
                    got: self.unread().len() as u64,
                });
            }
        }
        let body = self.buf[self.start..self.start + length_usize].to_vec();
        self.start += length_usize;
        if self.buf.capacity() > 2 * CHUNK && self.unread().len() < CHUNK {
            // Do not keep a large frame's buffer for the life of a warm session.
            self.buf.drain(..self.start);
            self.start = 0;
            self.buf.shrink_to(CHUNK);
        }
        Ok(body)
    }

    async fn read_header(&mut self, limits: &Limits) -> Result<u64, ProtocolError> {
        let max_line = limits.max_header_line();
        let mut length = None;
        let mut content_type = false;
        let mut first = true;
        loop {
            let line_end = loop {
                if let Some(i) = self.unread().iter().position(|&b| b == b'\n') {
                    if i + 1 > max_line {
                        return Err(ProtocolError::HeaderLineTooLong { limit: max_line });
                    }
                    break i;
                }
                if self.unread().len() >= max_line {
                    return Err(ProtocolError::HeaderLineTooLong { limit: max_line });
                }
                let room = max_line - self.unread().len();
                if self.fill(room.min(CHUNK)).await? == 0 {
                    return Err(if first && self.unread().is_empty() {
                        ProtocolError::Closed
                    } else {
                        ProtocolError::ClosedMidHeader
                    });
                }
            };
            first = false;
            let line = &self.buf[self.start..self.start + line_end];
            let Some(line) = line.strip_suffix(b"\r") else {
                return Err(ProtocolError::MalformedHeader(HeaderError::MissingCr));
            };
            if line.is_empty() {
                self.start += line_end + 1;
                return length.ok_or(ProtocolError::MalformedHeader(HeaderError::MissingLength));
            }
            match parse_header(line, limits)? {
                Header::Length(n) => {
                    if length.replace(n).is_some() {
                        return Err(ProtocolError::MalformedHeader(HeaderError::Duplicate(
                            "Content-Length",
                        )));
                    }
                }
                Header::ContentType => {
                    if std::mem::replace(&mut content_type, true) {
                        return Err(ProtocolError::MalformedHeader(HeaderError::Duplicate(
                            "Content-Type",
                        )));
                    }
                }
            }
            self.start += line_end + 1;
        }
    }
}

/// Writes one frame (header and body) and flushes.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
) -> Result<(), ProtocolError> {
    let mut written = 0;
    write_frame_counted(w, body, &mut written).await
}

/// [`write_frame`], adding to `written` each byte of the frame as it is written (also when a
/// later write fails).
pub(crate) async fn write_frame_counted<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
    written: &mut usize,
) -> Result<(), ProtocolError> {
    let frame = encode_frame(body);
    let mut left = &frame[..];
    while !left.is_empty() {
        match w.write(left).await {
            Ok(0) => {
                let e = std::io::Error::from(std::io::ErrorKind::WriteZero);
                return Err(ProtocolError::write(&e));
            }
            Ok(n) => {
                *written += n;
                left = &left[n..];
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::write(&e)),
        }
    }
    w.flush().await.map_err(|e| ProtocolError::write(&e))
}

/// Frames `body` as the host does (for tests and test programs).
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    frame.extend_from_slice(body);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn read(input: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        read_with(input, &Limits::default())
    }

    fn read_with(input: &[u8], limits: &Limits) -> Result<Vec<u8>, ProtocolError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(FrameReader::new(input).read_frame(limits))
    }

    fn header(e: HeaderError) -> Result<Vec<u8>, ProtocolError> {
        Err(ProtocolError::MalformedHeader(e))
    }

    #[test]
    fn well_formed_frames() {
        assert_eq!(read(b"Content-Length: 2\r\n\r\n{}"), Ok(b"{}".to_vec()));
        assert_eq!(read(b"content-length:2\r\n\r\n{}"), Ok(b"{}".to_vec()));
        assert_eq!(
            read(
                b"Content-Length: 2 \r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}"
            ),
            Ok(b"{}".to_vec())
        );
        // Two frames back to back: the second is kept for the next read.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut r = FrameReader::new(&b"Content-Length: 1\r\n\r\n1Content-Length: 1\r\n\r\n2"[..]);
        let l = Limits::default();
        assert_eq!(rt.block_on(r.read_frame(&l)), Ok(b"1".to_vec()));
        assert_eq!(rt.block_on(r.read_frame(&l)), Ok(b"2".to_vec()));
        assert_eq!(rt.block_on(r.read_frame(&l)), Err(ProtocolError::Closed));
    }

    #[test]
    fn a_declared_gibibyte_costs_nothing() {
        // Only the header is there: the refusal must come from the header line alone, not
        // from waiting for (or allocating) the body.
        let t = Instant::now();
        assert_eq!(
            read(b"Content-Length: 1073741824\r\n"),
            Err(ProtocolError::FrameTooLarge {
                declared: 1 << 30,
                limit: 1 << 20
            })
        );
        assert!(t.elapsed() < Duration::from_millis(50));
        // One byte over the limit is over.
        assert_eq!(
            read(b"Content-Length: 1048577\r\n\r\n"),
            Err(ProtocolError::FrameTooLarge {
                declared: (1 << 20) + 1,
                limit: 1 << 20
            })
        );
    }

    #[test]
    fn lengths_that_are_not_plain_decimal() {
        for v in [
            "-1",
            "+5",
            "0x10",
            "1e3",
            "",
            "5 5",
            "٣",
            "18446744073709551616",
            "99999999999999999999999999",
        ] {
            let input = format!("Content-Length: {v}\r\n\r\n{{}}");
            let want = if v.is_ascii() {
                header(HeaderError::BadLength)
            } else {
                header(HeaderError::NotAscii)
            };
            assert_eq!(read(input.as_bytes()), want, "{v:?}");
        }
        // The largest u64 parses, and is then too large.
        assert_eq!(
            read(b"Content-Length: 18446744073709551615\r\n\r\n"),
            Err(ProtocolError::FrameTooLarge {
                declared: u64::MAX,
                limit: 1 << 20
            })
        );
    }

    #[test]
    fn duplicate_and_unknown_headers() {
        assert_eq!(
            read(b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}"),
            header(HeaderError::Duplicate("Content-Length"))
        );
        assert_eq!(
            read(b"Content-Length: 2\r\ncontent-length: 3\r\n\r\n{}"),
            header(HeaderError::Duplicate("Content-Length"))
        );
        assert_eq!(
            read(b"Content-Type: a\r\nContent-Type: a\r\nContent-Length: 2\r\n\r\n{}"),
            header(HeaderError::Duplicate("Content-Type"))
        );
        assert_eq!(
            read(b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}"),
            header(HeaderError::Unknown("Transfer-Encoding".into()))
        );
        assert_eq!(
            read(b"Content-Type: application/json; charset=latin1\r\nContent-Length: 2\r\n\r\n{}"),
            header(HeaderError::BadCharset)
        );
        assert_eq!(read(b"\r\n{}"), header(HeaderError::MissingLength));
        assert_eq!(
            read(b"Content-Length 2\r\n\r\n{}"),
            header(HeaderError::NoColon)
        );
    }

    #[test]
    fn missing_crlf_and_blank_line() {
        assert_eq!(
            read(b"Content-Length: 2\n\n{}"),
            header(HeaderError::MissingCr)
        );
        assert_eq!(
            read(b"Content-Length: 2\r\n\n{}"),
            header(HeaderError::MissingCr)
        );
        // No blank line: the body is read as a header line.
        assert_eq!(
            read(b"Content-Length: 2\r\n{}\r\n"),
            header(HeaderError::NoColon)
        );
        assert_eq!(
            read(b"Content-Length: 2\r\n{\"a\":1}\r\n"),
            header(HeaderError::Unknown("{\"a\"".into()))
        );
        // No blank line and then the stream ends.
        assert_eq!(
            read(b"Content-Length: 2\r\n{}"),
            Err(ProtocolError::ClosedMidHeader)
        );
        assert_eq!(
            read(b"Content-Length: 2\r\n\r\n{"),
            Err(ProtocolError::ClosedMidFrame {
                expected: 2,
                got: 1
            })
        );
    }

    #[test]
    fn a_megabyte_header_line_is_cut_at_the_limit() {
        let mut input = b"Content-Length: 2".to_vec();
        input.resize(1 << 20, b' ');
        input.extend_from_slice(b"\r\n\r\n{}");
        assert_eq!(
            read(&input),
            Err(ProtocolError::HeaderLineTooLong { limit: 1024 })
        );
        // Endless bytes with no newline at all.
        assert_eq!(
            read(&vec![b'A'; 1 << 20]),
            Err(ProtocolError::HeaderLineTooLong { limit: 1024 })
        );
        // A line of exactly the limit (CRLF included) is fine.
        let l = Limits::default().with_max_header_line(20).unwrap();
        assert_eq!(
            read_with(b"Content-Length:   2\r\n\r\n{}", &l),
            Err(ProtocolError::HeaderLineTooLong { limit: 20 })
        );
        assert_eq!(
            read_with(b"Content-Length:  2\r\n\r\n{}", &l),
            Ok(b"{}".to_vec())
        );
    }

    #[test]
    fn header_bytes_outside_printable_ascii() {
        assert_eq!(
            read(b"Content-Length: 2\xff\r\n\r\n{}"),
            header(HeaderError::NotAscii)
        );
        assert_eq!(
            read(b"Content-Length: 2\r\x00\r\n\r\n{}"),
            header(HeaderError::NotAscii)
        );
        assert_eq!(
            read(b"Content-Length: 2\rX\r\n\r\n{}"),
            header(HeaderError::NotAscii)
        );
    }

    #[test]
    fn empty_stream_is_closed() {
        assert_eq!(read(b""), Err(ProtocolError::Closed));
        assert_eq!(read(b"Content-Le"), Err(ProtocolError::ClosedMidHeader));
    }
}
