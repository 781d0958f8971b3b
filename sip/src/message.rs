//! Parsing: bytes → [`Message`].
//!
//! Two stages. The first finds the header/body boundary, unfolds header lines, checks the
//! start line and splits `name: value` lines into a [`RawMessage`]. The second reads the headers
//! a B2BUA needs (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact, Content-Type,
//! Content-Length) into typed fields. When the second stage fails, the [`ParseFailure`] still
//! carries the raw message so a request can be answered with `400` at its top Via.

use crate::header::HeaderName;
use crate::method::Method;
use crate::name_addr::NameAddr;
use crate::scan::{is_token, parse_bounded, trim_lws, SplitOutside};
use crate::uri::{Scheme, Uri};
use crate::via::Via;
use bytes::Bytes;
use std::ops::Deref;

/// Largest CSeq sequence number: RFC 3261 §8.1.1.5 requires it to be below 2^31.
pub const MAX_CSEQ: u64 = (1 << 31) - 1;

/// Why a message was not accepted. Every variant is a fault of the peer, not of DCE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No empty line ends the header section (a truncated datagram).
    #[error("no empty line after the headers")]
    NoHeaderEnd,
    /// The header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// The request or status line is malformed (extra or trailing spaces, bad method, code).
    #[error("malformed start line")]
    StartLine,
    /// A SIP version other than 2.0; answered with 505.
    #[error("unsupported SIP version")]
    Version,
    /// The Request-URI does not parse.
    #[error("malformed Request-URI")]
    RequestUri,
    /// The Request-URI carries `?headers`, which RFC 3261 §19.1.1 does not allow there.
    #[error("headers in the Request-URI")]
    UriHeaders,
    /// A header line has no colon or its name is not a token.
    #[error("malformed header line")]
    HeaderLine,
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that may appear once appears more than once.
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    /// A header value does not parse.
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    /// Content-Length is not a number (negative, overlarge, garbage).
    #[error("malformed Content-Length")]
    ContentLength,
    /// Content-Length is larger than the bytes that arrived.
    #[error("Content-Length larger than the message")]
    BodyTruncated,
}

impl ParseError {
    /// A short stable name for counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::NoHeaderEnd => "truncated",
            ParseError::NotUtf8 => "not_utf8",
            ParseError::StartLine => "bad_start_line",
            ParseError::Version => "bad_version",
            ParseError::RequestUri => "bad_request_uri",
            ParseError::UriHeaders => "request_uri_headers",
            ParseError::HeaderLine => "bad_header_line",
            ParseError::MissingHeader(_) => "missing_header",
            ParseError::DuplicateHeader(_) => "duplicate_header",
            ParseError::BadHeader(_) => "bad_header",
            ParseError::CSeqMismatch => "cseq_mismatch",
            ParseError::ContentLength => "bad_content_length",
            ParseError::BodyTruncated => "body_truncated",
        }
    }
}

/// A failed parse: the error, and the raw message when the line structure was sound.
#[derive(Debug)]
pub struct ParseFailure {
    /// What was wrong.
    pub error: ParseError,
    /// The message split into lines, when that much worked.
    pub raw: Option<Box<RawMessage>>,
}

/// Byte range into [`RawMessage::head`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `Method SP Request-URI SP SIP-Version`
    Request {
        /// The method.
        method: Method,
        /// The Request-URI as written.
        uri: String,
    },
    /// `SIP-Version SP Status-Code SP Reason-Phrase`
    Response {
        /// The status code, 100–699.
        code: u16,
        /// The reason phrase (may be empty).
        reason: String,
    },
}

/// A message split into start line, header lines and body. Header values are trimmed and
/// unfolded; their order and spelling are kept.
#[derive(Debug, Clone)]
pub struct RawMessage {
    head: String,
    start: StartLine,
    headers: Vec<(HeaderName, Span)>,
    body: Bytes,
}

impl RawMessage {
    /// The start line.
    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    /// True for a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method (`None` for a response).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The reason phrase (`None` for a request).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// The status code (`None` for a request).
    pub fn code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    fn text(&self, s: Span) -> &str {
        self.head
            .get(s.start as usize..s.end as usize)
            .unwrap_or("")
    }

    /// Every header in order, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &str)> + '_ {
        self.headers.iter().map(move |(n, s)| (n, self.text(*s)))
    }

    /// The values of every header with this name, in order.
    pub fn headers_named<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(move |(_, s)| self.text(*s))
    }

    /// The first value of a header.
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| self.text(*s))
    }

    /// A comma-separated list header (Require, Supported, Accept, Allow …) across all its
    /// lines, items trimmed, empty items skipped.
    pub fn list<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        self.headers_named(name)
            .flat_map(|v| v.split(','))
            .map(trim_lws)
            .filter(|s| !s.is_empty())
    }

    /// The body (exactly Content-Length bytes when the header is present).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The first via-parm of the first Via header, if it parses: where a response goes.
    pub fn top_via(&self) -> Option<Via> {
        let v = self.header(&HeaderName::Via)?;
        let first = v.split(',').next()?;
        Via::parse(first).ok()
    }

    /// For answering a malformed request: the top via-parm, and whether it parsed fully. When
    /// only its sent-protocol and sent-by are readable, the reply can still be addressed.
    pub fn reply_via(&self) -> Option<(Via, bool)> {
        let v = self.header(&HeaderName::Via)?;
        let first = v.split(',').next()?;
        match Via::parse(first) {
            Ok(via) => Some((via, true)),
            Err(_) => Via::parse_sent_by_only(first).ok().map(|via| (via, false)),
        }
    }

    /// The message printed as received: unfolded head, blank line, body. Content-Length is
    /// written as received; use [`crate::MessageBuf`] to build new messages.
    pub fn print_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.head.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// A well-formed SIP message with the fields DCE needs already read.
#[derive(Debug, Clone)]
pub struct Message {
    raw: RawMessage,
    core: Core,
}

#[derive(Debug, Clone)]
struct Core {
    request_uri: Option<Uri>,
    vias: Vec<Via>,
    call_id: String,
    from: NameAddr,
    to: NameAddr,
    cseq: u32,
    cseq_method: Method,
    max_forwards: Option<u8>,
    contacts: Vec<NameAddr>,
    content_type: Option<String>,
    content_length: Option<u32>,
}

impl Deref for Message {
    type Target = RawMessage;
    fn deref(&self) -> &RawMessage {
        &self.raw
    }
}

impl Message {
    /// The Request-URI (requests only).
    pub fn request_uri(&self) -> Option<&Uri> {
        self.core.request_uri.as_ref()
    }
    /// Every via-parm, top first.
    pub fn vias(&self) -> &[Via] {
        &self.core.vias
    }
    /// The topmost via-parm.
    pub fn via(&self) -> &Via {
        &self.core.vias[0]
    }
    /// Call-ID.
    pub fn call_id(&self) -> &str {
        &self.core.call_id
    }
    /// From.
    pub fn from(&self) -> &NameAddr {
        &self.core.from
    }
    /// To.
    pub fn to(&self) -> &NameAddr {
        &self.core.to
    }
    /// CSeq sequence number.
    pub fn cseq(&self) -> u32 {
        self.core.cseq
    }
    /// CSeq method.
    pub fn cseq_method(&self) -> &Method {
        &self.core.cseq_method
    }
    /// Max-Forwards, when present.
    pub fn max_forwards(&self) -> Option<u8> {
        self.core.max_forwards
    }
    /// The first Contact, unless absent or `*`.
    pub fn contact(&self) -> Option<&NameAddr> {
        self.core.contacts.first()
    }
    /// Every Contact.
    pub fn contacts(&self) -> &[NameAddr] {
        &self.core.contacts
    }
    /// Content-Type, when present.
    pub fn content_type(&self) -> Option<&str> {
        self.core.content_type.as_deref()
    }
    /// Content-Length, when present.
    pub fn content_length(&self) -> Option<u32> {
        self.core.content_length
    }
    /// The raw form.
    pub fn raw(&self) -> &RawMessage {
        &self.raw
    }
}

/// Parse one message from a datagram or a framed stream message.
///
/// With Content-Length, the body is exactly that many bytes and trailing bytes are ignored
/// (RFC 3261 §18.3, RFC 4475 §3.1.1.8); without it, the body is the rest of the input.
pub fn parse(input: Bytes) -> Result<Message, ParseFailure> {
    match parse_raw(&input) {
        Ok(raw) => read_core(raw),
        Err((error, raw)) => Err(ParseFailure { error, raw }),
    }
}

fn find_head_end(b: &[u8]) -> Option<usize> {
    memchr::memmem::find(b, b"\r\n\r\n")
}

/// Split into lines. A broken request line still yields the raw message (so the request can
/// be answered 400 or 505 at its Via); a broken header section does not.
fn parse_raw(input: &Bytes) -> Result<RawMessage, (ParseError, Option<Box<RawMessage>>)> {
    // RFC 3261 §7.5: ignore CRLFs before the start line.
    let mut offset = 0;
    while input.get(offset..offset + 2) == Some(b"\r\n") {
        offset += 2;
    }
    let b = &input[offset..];
    let head_end = find_head_end(b).ok_or((ParseError::NoHeaderEnd, None))?;
    let mut head = b[..head_end].to_vec();
    // Unfold: CRLF followed by SP/HT becomes spaces, keeping every offset.
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\n', &head[i..]) {
        let j = i + p;
        if j > 0 && head[j - 1] == b'\r' && matches!(head.get(j + 1), Some(b' ' | b'\t')) {
            head[j - 1] = b' ';
            head[j] = b' ';
        }
        i = j + 1;
    }
    let head = String::from_utf8(head).map_err(|_| (ParseError::NotUtf8, None))?;
    let body = input.slice(offset + head_end + 4..);

    let mut lines = LineIter { s: &head, pos: 0 };
    let (_, start_line) = lines.next().ok_or((ParseError::StartLine, None))?;
    let start = parse_start_line(start_line);
    let mut headers = Vec::with_capacity(16);
    for (off, line) in lines {
        if memchr::memchr2(b'\r', b'\n', line.as_bytes()).is_some() {
            return Err((ParseError::HeaderLine, None));
        }
        let colon = memchr::memchr(b':', line.as_bytes()).ok_or((ParseError::HeaderLine, None))?;
        let name = trim_lws(&line[..colon]);
        if !is_token(name) {
            return Err((ParseError::HeaderLine, None));
        }
        let vstart = colon + 1;
        let value = &line[vstart..];
        let lead = value.len() - value.trim_start_matches([' ', '\t']).len();
        let trimmed = trim_lws(value);
        let s = off + vstart + lead;
        headers.push((HeaderName::from_wire(name), Span::new(s, s + trimmed.len())));
    }
    match start {
        Ok(start) => Ok(RawMessage {
            head,
            start,
            headers,
            body,
        }),
        Err(e) => {
            // A request whose method is still readable can be answered at its Via.
            let method = start_line
                .split(' ')
                .next()
                .filter(|m| is_token(m) && !m.starts_with("SIP/"));
            let raw = method.map(|m| {
                Box::new(RawMessage {
                    start: StartLine::Request {
                        method: Method::from_token(m),
                        uri: String::new(),
                    },
                    head: head.clone(),
                    headers,
                    body,
                })
            });
            Err((e, raw))
        }
    }
}

struct LineIter<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Iterator for LineIter<'a> {
    type Item = (usize, &'a str);
    fn next(&mut self) -> Option<(usize, &'a str)> {
        if self.pos > self.s.len() {
            return None;
        }
        let rest = &self.s[self.pos..];
        let start = self.pos;
        let crlf = memchr::memchr_iter(b'\n', rest.as_bytes())
            .find(|&i| i > 0 && rest.as_bytes()[i - 1] == b'\r')
            .map(|i| i - 1);
        match crlf {
            Some(i) => {
                self.pos += i + 2;
                Some((start, &rest[..i]))
            }
            None => {
                self.pos = self.s.len() + 1;
                Some((start, rest))
            }
        }
    }
}

/// `SIP/x.y` (case-insensitive `SIP`): `Some(true)` for 2.0, `Some(false)` for another version,
/// `None` when it is not a version at all.
fn version_is_2_0(v: &str) -> Option<bool> {
    let rest = v.get(..4).filter(|p| p.eq_ignore_ascii_case("SIP/"))?;
    let _ = rest;
    let nums = &v[4..];
    let (major, minor) = nums.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some(parse_bounded(major, 1000) == Some(2) && parse_bounded(minor, 1000) == Some(0))
}

fn parse_start_line(line: &str) -> Result<StartLine, ParseError> {
    if line
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        let (version, rest) = line.split_once(' ').ok_or(ParseError::StartLine)?;
        if version_is_2_0(version) != Some(true) {
            return Err(ParseError::Version);
        }
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if code.len() != 3 {
            return Err(ParseError::StartLine);
        }
        let code = parse_bounded(code, 699).ok_or(ParseError::StartLine)? as u16;
        if code < 100 {
            return Err(ParseError::StartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let (method, rest) = line.split_once(' ').ok_or(ParseError::StartLine)?;
    let (uri, version) = rest.split_once(' ').ok_or(ParseError::StartLine)?;
    if !is_token(method) || uri.is_empty() || version.contains([' ', '\t']) {
        return Err(ParseError::StartLine);
    }
    match version_is_2_0(version) {
        Some(true) => {}
        Some(false) => return Err(ParseError::Version),
        None => return Err(ParseError::StartLine),
    }
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri: uri.to_owned(),
    })
}

fn fail(error: ParseError, raw: RawMessage) -> ParseFailure {
    ParseFailure {
        error,
        raw: Some(Box::new(raw)),
    }
}

fn read_core(mut raw: RawMessage) -> Result<Message, ParseFailure> {
    match read_core_inner(&raw) {
        Ok((core, body)) => {
            raw.body = body;
            Ok(Message { raw, core })
        }
        Err(e) => Err(fail(e, raw)),
    }
}

/// The single-valued headers, found in one pass; a second occurrence is an error.
#[derive(Default)]
struct Singles<'a> {
    content_length: Option<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    call_id: Option<&'a str>,
    cseq: Option<&'a str>,
    max_forwards: Option<&'a str>,
    content_type: Option<&'a str>,
}

impl<'a> Singles<'a> {
    fn find(raw: &'a RawMessage) -> Result<Singles<'a>, ParseError> {
        let mut s = Singles::default();
        for (name, span) in &raw.headers {
            let (slot, label) = match name {
                HeaderName::ContentLength => (&mut s.content_length, "Content-Length"),
                HeaderName::From => (&mut s.from, "From"),
                HeaderName::To => (&mut s.to, "To"),
                HeaderName::CallId => (&mut s.call_id, "Call-ID"),
                HeaderName::CSeq => (&mut s.cseq, "CSeq"),
                HeaderName::MaxForwards => (&mut s.max_forwards, "Max-Forwards"),
                HeaderName::ContentType => (&mut s.content_type, "Content-Type"),
                _ => continue,
            };
            if slot.replace(raw.text(*span)).is_some() {
                return Err(ParseError::DuplicateHeader(label));
            }
        }
        Ok(s)
    }
}

fn read_core_inner(raw: &RawMessage) -> Result<(Core, Bytes), ParseError> {
    let singles = Singles::find(raw)?;
    // Framing first: a bad Content-Length makes everything after it meaningless.
    let content_length = match singles.content_length {
        Some(v) => {
            Some(parse_bounded(v, u64::from(u32::MAX)).ok_or(ParseError::ContentLength)? as u32)
        }
        None => None,
    };
    let mut body = raw.body.clone();
    if let Some(cl) = content_length {
        let cl = cl as usize;
        if cl > body.len() {
            return Err(ParseError::BodyTruncated);
        }
        body.truncate(cl);
    }

    let mut vias = Vec::with_capacity(2);
    for v in raw.headers_named(&HeaderName::Via) {
        vias.extend(Via::parse_list(v).map_err(|_| ParseError::BadHeader("Via"))?);
    }
    if vias.is_empty() {
        return Err(ParseError::MissingHeader("Via"));
    }
    let from = singles.from.ok_or(ParseError::MissingHeader("From"))?;
    let to = singles.to.ok_or(ParseError::MissingHeader("To"))?;
    let call_id = singles
        .call_id
        .ok_or(ParseError::MissingHeader("Call-ID"))?;
    let cseq = singles.cseq.ok_or(ParseError::MissingHeader("CSeq"))?;
    let max_forwards = match singles.max_forwards {
        Some(v) => Some(parse_bounded(v, 255).ok_or(ParseError::BadHeader("Max-Forwards"))? as u8),
        None => None,
    };
    let content_type = singles.content_type;

    let from = NameAddr::parse(from).map_err(|_| ParseError::BadHeader("From"))?;
    let to = NameAddr::parse(to).map_err(|_| ParseError::BadHeader("To"))?;
    if call_id.is_empty() || call_id.contains([' ', '\t']) {
        return Err(ParseError::BadHeader("Call-ID"));
    }
    let (seq, cseq_method) = cseq
        .split_once([' ', '\t'])
        .ok_or(ParseError::BadHeader("CSeq"))?;
    let seq = parse_bounded(seq, MAX_CSEQ).ok_or(ParseError::BadHeader("CSeq"))? as u32;
    let cseq_method = trim_lws(cseq_method);
    if !is_token(cseq_method) {
        return Err(ParseError::BadHeader("CSeq"));
    }
    let cseq_method = Method::from_token(cseq_method);

    let mut contacts = Vec::new();
    for v in raw.headers_named(&HeaderName::Contact) {
        if v == "*" {
            continue;
        }
        let mut items = SplitOutside::new(v, b',');
        for item in items.by_ref() {
            contacts.push(NameAddr::parse(item).map_err(|_| ParseError::BadHeader("Contact"))?);
        }
        if items.unterminated {
            return Err(ParseError::BadHeader("Contact"));
        }
    }

    let request_uri = match &raw.start {
        StartLine::Request { method, uri } => {
            if *method != cseq_method {
                return Err(ParseError::CSeqMismatch);
            }
            let uri = Uri::parse(uri).map_err(|_| ParseError::RequestUri)?;
            if matches!(uri.scheme, Scheme::Sip | Scheme::Sips) && uri.headers().is_some() {
                return Err(ParseError::UriHeaders);
            }
            Some(uri)
        }
        StartLine::Response { .. } => None,
    };

    Ok((
        Core {
            request_uri,
            vias,
            call_id: call_id.to_owned(),
            from,
            to,
            cseq: seq,
            cseq_method,
            max_forwards,
            contacts,
            content_type: content_type.map(str::to_owned),
            content_length,
        },
        body,
    ))
}
