//! # dce-media — SDP rewriting, RTP/RTCP relay, per-stream quality
//!
//! This crate will own everything about the media of a call: rewriting SDP offers and answers
//! so both legs send RTP to DCE, the relay loop (tokio, batched socket I/O), and the quality
//! statistics of every stream (loss per RFC 3550 A.3, jitter per A.8, an E-model MOS) as pure
//! code with time passed in.
//!
//! ## Layout
//!
//! Empty until the media issue lands; DCE passes SDP through untouched until then.
