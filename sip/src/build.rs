//! Owned messages to send: [`MessageBuf`], and responses built from a request as RFC 3261
//! §8.2.6 says (Via, From, Call-ID, CSeq copied; To copied with a tag added).

use crate::header::HeaderName;
use crate::message::{RawMessage, StartLine};
use crate::method::Method;
use crate::name_addr::NameAddr;
use bytes::Bytes;
use std::io::Write;

/// The start line of an outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLineBuf {
    /// A request line.
    Request {
        /// Method.
        method: Method,
        /// Request-URI.
        uri: String,
    },
    /// A status line.
    Response {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// A message under construction. Content-Length is always computed when printing; any
/// Content-Length header in `headers` is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBuf {
    /// Start line.
    pub start: StartLineBuf,
    /// Headers in order.
    pub headers: Vec<(HeaderName, String)>,
    /// Body.
    pub body: Bytes,
}

impl MessageBuf {
    /// A request with no headers yet.
    pub fn request(method: Method, uri: impl Into<String>) -> MessageBuf {
        MessageBuf {
            start: StartLineBuf::Request {
                method,
                uri: uri.into(),
            },
            headers: Vec::with_capacity(12),
            body: Bytes::new(),
        }
    }

    /// Append a header.
    pub fn push(&mut self, name: HeaderName, value: impl Into<String>) -> &mut Self {
        self.headers.push((name, value.into()));
        self
    }

    /// First value of a header.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Remove every header with this name.
    pub fn remove(&mut self, name: &HeaderName) {
        self.headers.retain(|(n, _)| n != name);
    }

    /// Print to wire bytes, with CRLF line ends and a computed Content-Length.
    pub fn print(&self) -> Bytes {
        let mut out = Vec::with_capacity(256 + self.body.len() + self.headers.len() * 48);
        self.print_into(&mut out);
        Bytes::from(out)
    }

    /// Print into `out`.
    pub fn print_into(&self, out: &mut Vec<u8>) {
        match &self.start {
            StartLineBuf::Request { method, uri } => {
                out.extend_from_slice(method.as_str().as_bytes());
                out.push(b' ');
                out.extend_from_slice(uri.as_bytes());
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLineBuf::Response { code, reason } => {
                out.extend_from_slice(b"SIP/2.0 ");
                let _ = write!(out, "{code}");
                out.push(b' ');
                out.extend_from_slice(reason.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        for (name, value) in &self.headers {
            if *name == HeaderName::ContentLength {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        out.extend_from_slice(&self.body);
    }
}

impl RawMessage {
    /// Copy into an owned [`MessageBuf`] (headers in canonical spelling, same order).
    pub fn to_buf(&self) -> MessageBuf {
        let start = match self.start_line() {
            StartLine::Request { method, uri } => StartLineBuf::Request {
                method: method.clone(),
                uri: uri.clone(),
            },
            StartLine::Response { code, reason } => StartLineBuf::Response {
                code: *code,
                reason: reason.clone(),
            },
        };
        MessageBuf {
            start,
            headers: self
                .headers()
                .map(|(n, v)| (n.clone(), v.to_owned()))
                .collect(),
            body: self.body().clone(),
        }
    }

    /// Build a response to this request per RFC 3261 §8.2.6.
    ///
    /// Every Via is copied in order, the top one replaced by `top_via` when given (the value
    /// with `received`/`rport` the server transport added, §18.2.1). From, Call-ID and CSeq are
    /// copied; To is copied and gets `;tag=<to_tag>` unless it has a tag already or the
    /// response is `100 Trying`; Timestamp is copied into 100 (§8.2.6.1). Works on a request
    /// that failed typed parsing too, so a `400` can echo what arrived.
    pub fn response(
        &self,
        code: u16,
        reason: &str,
        to_tag: &str,
        top_via: Option<&str>,
    ) -> MessageBuf {
        let mut headers = Vec::with_capacity(8);
        let mut first_via = true;
        for v in self.headers_named(&HeaderName::Via) {
            if first_via {
                first_via = false;
                if let Some(top) = top_via {
                    // Replace the first via-parm, keep the rest of this header line.
                    let rest = v.split_once(',').map(|(_, r)| r.trim());
                    let value = match rest {
                        Some(r) if !r.is_empty() => format!("{top}, {r}"),
                        _ => top.to_owned(),
                    };
                    headers.push((HeaderName::Via, value));
                    continue;
                }
            }
            headers.push((HeaderName::Via, v.to_owned()));
        }
        if let Some(f) = self.header(&HeaderName::From) {
            headers.push((HeaderName::From, f.to_owned()));
        }
        if let Some(t) = self.header(&HeaderName::To) {
            let has_tag = match NameAddr::parse(t) {
                Ok(n) => n.tag().is_some(),
                Err(_) => t.to_ascii_lowercase().contains("tag="),
            };
            let value = if has_tag || code == 100 || to_tag.is_empty() {
                t.to_owned()
            } else {
                format!("{t};tag={to_tag}")
            };
            headers.push((HeaderName::To, value));
        }
        if let Some(c) = self.header(&HeaderName::CallId) {
            headers.push((HeaderName::CallId, c.to_owned()));
        }
        if let Some(c) = self.header(&HeaderName::CSeq) {
            headers.push((HeaderName::CSeq, c.to_owned()));
        }
        if code == 100 {
            if let Some(ts) = self.header(&HeaderName::Timestamp) {
                headers.push((HeaderName::Timestamp, ts.to_owned()));
            }
        }
        MessageBuf {
            start: StartLineBuf::Response {
                code,
                reason: reason.to_owned(),
            },
            headers,
            body: Bytes::new(),
        }
    }
}

/// The standard reason phrase for a status code DCE sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        603 => "Decline",
        _ => "Unknown",
    }
}
