//! # dce-media — SDP rewriting, the RTP/RTCP relay, per-stream quality
//!
//! DCE anchors the media of every call: both parties send RTP and RTCP to DCE's ports, DCE
//! relays it, and measures each direction on the way through.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `sdp.rs` | offer/answer rewriting (addresses and ports only) on `sdp-types` |
//! | `ports.rs` | the even/odd RTP/RTCP port-pair pool |
//! | `dtmf.rs` | RFC 4733 telephone-events: the digits (and how long each was held) a leg sent — pure |
//! | `record.rs` | call recording: both directions as one stereo WAV (G.711 decoded, placed by RTP timestamp) on the `dce-rec` thread |
//! | `stats.rs` | loss (RFC 3550 A.1 `update_seq`, A.3), jitter (A.8), RTCP RR/SR, E-model MOS — pure, time passed in |
//! | `engine.rs` | [`MediaEngine`]: what the call controller asks of media, and the call report |
//! | `relay.rs` | [`Relay`]: the worker's side (port pairs, commands) |
//! | `stream.rs` | one stream's state on the relay thread: source checks, latching, accounting, RTP timeout |
//! | `pump.rs` | the relay thread: owns the sockets, one `epoll` loop moves every stream's packets |
//!
//! The statistics are pure code; only `relay.rs` and `pump.rs` touch sockets and the clock.

pub mod dtmf;
pub mod engine;
pub mod ports;
mod pump;
pub mod record;
pub mod relay;
pub mod sdp;
pub mod stats;
mod stream;
pub mod sys;

pub use engine::{MediaEngine, MediaError, MediaEvent, MediaId, MediaReport, Side};
pub use relay::{PortGauge, Relay, RelayConfig};
pub use sdp::{inspect, rewrite, Parsed, SdpError, Stream};
pub use stats::{StreamReport, StreamStats};
