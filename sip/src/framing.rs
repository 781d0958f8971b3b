//! Stream framing (RFC 3261 §18.3): on TCP a message ends where its Content-Length says.
//!
//! [`frame`] looks at the start of a receive buffer and says whether a whole message is there,
//! more bytes are needed, or the stream cannot be framed any more (then the connection must be
//! closed: there is no way to find the next message). Check-then-parse, as in mini-redis.

use crate::header::HeaderName;
use crate::scan::{parse_bounded, trim_lws};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole message of this many bytes.
    Message(usize),
    /// A CRLF CRLF keep-alive ping (RFC 5626 §3.5.1) of this many bytes; answer with CRLF.
    Ping(usize),
    /// A lone CRLF of this many bytes before a message; skip it (RFC 3261 §7.5).
    Skip(usize),
    /// Not enough bytes yet.
    Incomplete,
    /// The stream cannot be framed; close the connection.
    Invalid(FramingError),
}

/// Why a stream cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// No Content-Length header: on a stream the message length is unknowable.
    #[error("no Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length is not a non-negative number, or appears twice.
    #[error("malformed Content-Length")]
    BadContentLength,
    /// The header section or the whole message exceeds the size limit.
    #[error("message larger than the limit")]
    TooLarge,
    /// The header section is not text.
    #[error("header section is not UTF-8")]
    NotText,
}

/// Inspect the front of `buf`; `max` bounds a whole message in bytes.
pub fn frame(buf: &[u8], max: usize) -> Frame {
    if buf.starts_with(b"\r\n\r\n") {
        return Frame::Ping(4);
    }
    if buf.len() < 4 && b"\r\n\r\n".starts_with(buf) {
        return Frame::Incomplete;
    }
    if buf.starts_with(b"\r\n") {
        return Frame::Skip(2);
    }
    let head_end = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(p) => p,
        None => {
            return if buf.len() > max {
                Frame::Invalid(FramingError::TooLarge)
            } else {
                Frame::Incomplete
            };
        }
    };
    if head_end + 4 > max {
        return Frame::Invalid(FramingError::TooLarge);
    }
    let head = match std::str::from_utf8(&buf[..head_end]) {
        Ok(h) => h,
        Err(_) => return Frame::Invalid(FramingError::NotText),
    };
    let mut cl: Option<u64> = None;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if HeaderName::from_wire(trim_lws(name)) != HeaderName::ContentLength {
            continue;
        }
        if cl.is_some() {
            return Frame::Invalid(FramingError::BadContentLength);
        }
        match parse_bounded(trim_lws(value), max as u64) {
            Some(v) => cl = Some(v),
            None => {
                // Negative or garbage is unrecoverable; a valid number over the limit is size.
                let v = trim_lws(value);
                return if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) {
                    Frame::Invalid(FramingError::TooLarge)
                } else {
                    Frame::Invalid(FramingError::BadContentLength)
                };
            }
        }
    }
    let Some(cl) = cl else {
        return Frame::Invalid(FramingError::MissingContentLength);
    };
    let total = head_end + 4 + cl as usize;
    if total > max {
        return Frame::Invalid(FramingError::TooLarge);
    }
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabcNEXT";

    #[test]
    fn frames_by_content_length() {
        assert_eq!(frame(MSG, 65535), Frame::Message(MSG.len() - 4));
        assert_eq!(frame(&MSG[..20], 65535), Frame::Incomplete);
        assert_eq!(frame(&MSG[..MSG.len() - 6], 65535), Frame::Incomplete);
    }

    #[test]
    fn rejects_unframeable() {
        assert_eq!(
            frame(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", 65535),
            Frame::Invalid(FramingError::MissingContentLength)
        );
        assert_eq!(
            frame(
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n",
                65535
            ),
            Frame::Invalid(FramingError::BadContentLength)
        );
        assert_eq!(
            frame(
                b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 4294967290\r\n\r\n",
                65535
            ),
            Frame::Invalid(FramingError::TooLarge)
        );
        assert_eq!(
            frame(
                b"OPTIONS sip:a@b SIP/2.0\r\nl: 1\r\nContent-Length: 1\r\n\r\nx",
                65535
            ),
            Frame::Invalid(FramingError::BadContentLength)
        );
        assert_eq!(
            frame(&[b'x'; 70000], 65535),
            Frame::Invalid(FramingError::TooLarge)
        );
    }

    #[test]
    fn keepalives() {
        assert_eq!(frame(b"\r\n\r\n", 100), Frame::Ping(4));
        assert_eq!(frame(b"\r\nOPTIONS", 100), Frame::Skip(2));
        assert_eq!(frame(b"\r\n", 100), Frame::Incomplete);
    }
}
