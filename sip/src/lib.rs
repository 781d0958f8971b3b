//! # dce-sip — SIP messages and transactions for DCE, sans-IO
//!
//! This crate owns everything DCE knows about the SIP protocol itself. It never touches a socket
//! or a clock: bytes and the current time go in, parsed messages, bytes to send and the next
//! wake-up time come out. `src/` in the root package owns the sockets and the clock.
//!
//! ## Layout
//!
//! | module | what it owns |
//! |---|---|
//! | [`scan`] | character classes and small lexers of RFC 3261 §25 shared by the parsers |
//! | [`method`] | the request method |
//! | [`uri`] | SIP/SIPS/tel URIs (RFC 3261 §19.1, RFC 5118 IPv6 references) |
//! | [`header`] | header names, compact forms, canonical spelling |
//! | [`via`] | the Via header: sent-by, branch, RFC 3581 `received`/`rport` |
//! | [`name_addr`] | From, To, Contact values: display name, URI, tag |
//! | [`message`] | [`parse`]: bytes → [`Message`] with the fields a B2BUA needs, or a [`ParseFailure`] |
//! | [`build`] | [`MessageBuf`]: owned messages to print, responses built per RFC 3261 §8.2.6 |
//! | [`framing`] | stream (TCP) framing by Content-Length, RFC 5626 CRLF keep-alives |
//! | [`transaction`] | RFC 3261 §17 transactions with RFC 6026 Accepted state, timers A–M as data |
//!
//! The parser is strict where a lenient reading would let a malformed message change meaning
//! (framing, request line, scalar ranges, single-valued headers) and liberal where RFC 3261 is
//! (folding, case, unknown headers, unknown URI schemes outside the Request-URI).
//! See `docs/decisions/0001-own-sip-parser.md` for why this is not built on `ezk-sip-types`.

pub mod build;
pub mod digest;
pub mod framing;
pub mod header;
pub mod message;
pub mod method;
pub mod name_addr;
pub mod scan;
pub mod transaction;
pub mod uri;
pub mod via;

pub use build::{MessageBuf, StartLineBuf};
pub use header::HeaderName;
pub use message::{parse, Message, ParseError, ParseFailure, RawMessage, StartLine};
pub use method::Method;
pub use name_addr::NameAddr;
pub use uri::{Scheme, Uri};
pub use via::{Rport, Via};
