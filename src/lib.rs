//! # dce — the Dependable Call Exchange edge
//!
//! DCE is a SIP/RTP call router for the pay-per-call market. This crate is the process: it owns
//! the sockets, the clock, the configuration and the call controller, and joins the sans-IO
//! domain crates (`dce-sip`, `dce-media`, `dce-routing`, `dce-compliance`).
//!
//! ## Layout
//!
//! | module | what it owns |
//! |---|---|
//! | [`config`] | TOML config files, checked with `file:line` errors |
//! | [`call`] | the B2BUA call controller, carriers, CDRs |
//! | [`clock`] | the injected wall clock |
//! | [`transport`] | UDP and TCP socket drivers |
//! | [`store`] | CDRs in PostgreSQL or SQLite, the spool, the writer |
//! | [`shared`] | fleet-wide state in Redis: frequency cap, internal DNC overlay |
//! | [`fleet`] | fleet-wide buyer caps in Redis: leases, counts, one ordered queue per node |
//! | [`redis_conn`] | the Redis connection: a single server or a Cluster, pipelines split per hash slot |
//! | [`rtb`] | real-time bidding: bid requests to remote buyers (DCE, Ringba, Retreaver formats) |
//! | [`server`] | the core task: transaction layer, edge answers, timers |
//! | [`edge`] | what DCE answers before call logic (OPTIONS, 405/501/416/483/420/415/406) |
//! | [`demo`] | `dce demo`: simulated carrier and buyers, a table of calls |
//! | [`counters`] | one counter per reason a message was answered or dropped |
//! | [`ids`] | tags, branches, call ids |
//! | [`metrics`] | labelled figures for `/metrics`: outcomes, rules, SIP codes, auction histogram |
//! | [`logging`] | text or JSON logs, masked phone numbers |
//! | [`events`] | live call events for the WebSocket and the live page |
//! | [`latency`] | the delay DCE adds to an INVITE, for reports and load runs |
//! | [`http`] | the control API: keys, roles, limits, timeouts, routes, WebSocket events, OpenAPI, live page |

pub mod call;
pub mod clock;
pub mod config;
pub mod counters;
pub mod demo;
pub mod dns;
pub mod edge;
pub mod http;

pub mod events;
pub mod fleet;
pub mod ids;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod priority;
pub mod redis_conn;
pub mod rtb;
pub mod server;
pub mod shard;
pub mod shared;
pub mod stir;
pub mod store;
pub mod transport;
pub mod webhooks;
