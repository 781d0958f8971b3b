//! A SIP worker (shard): one OS thread with its own single-threaded runtime that reads its
//! UDP sockets, runs its [`EdgeCore`] (its calls, their transactions and timers, its media
//! relay's sessions — the packets themselves are relayed on the relay's own thread) and writes
//! what its core asks for — with no hand-off to another thread on the way from a datagram in
//! to the datagrams it causes (docs/decisions/0010-sip-workers.md).
//!
//! Datagrams are read in batches (`recvmmsg`) with the kernel's receive time, answered in
//! batches (`sendmmsg`). A datagram another worker owns ([`dispatch::owner`]) goes to that
//! worker's queue, as do messages read from TCP connections. The node task (`server.rs`)
//! sends each worker its controls: API requests, reloads, drain and stop.

use crate::call::cdr::CdrSink;
use crate::call::view::{BuyerPatch, BuyerView, CallView};
use crate::call::{Answer, LookupId, SharedChecks};
use crate::config::CarrierConfig;
use crate::counters::{Counter, Counters};
use crate::edge::{EdgeCore, Input, Output};
use crate::latency::Latency;
use crate::transport::gate::{Admit, Gate};
use crate::transport::mmsg::{self, RecvBatch, Sent, BATCH};
use crate::transport::{dispatch, Inbound, Shards};
use bytes::Bytes;
use dce_routing::Snapshot;
use dce_sip::transaction::{Peer, Transport};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// What the node task asks of one worker.
pub enum Control {
    /// An API request about calls or buyers.
    Api(ShardApi),
    /// A reload: new calls use this snapshot and carrier list.
    Reload {
        /// The routing snapshot (shared by every worker).
        snapshot: Arc<Snapshot>,
        /// The carriers.
        carriers: Arc<Vec<CarrierConfig>>,
        /// The fleet-wide checks, when Redis is configured.
        shared: Option<SharedChecks>,
        /// STIR/SHAKEN, when `[stir]` is configured.
        stir: Option<Arc<crate::stir::StirNode>>,
    },
    /// SIGTERM: no new calls; active calls may go on for the drain timeout, then get BYE.
    Drain,
    /// A second SIGTERM: end the active calls now.
    EndNow,
}

/// API requests a worker answers about its own calls.
pub enum ShardApi {
    /// `GET /v1/calls`.
    Calls(oneshot::Sender<Vec<CallView>>),
    /// `GET /v1/calls/{id}`.
    Call(String, oneshot::Sender<Option<CallView>>),
    /// `POST /v1/calls/{id}/hangup`: true when the call was this worker's.
    Hangup(String, oneshot::Sender<bool>),
    /// `GET /v1/buyers`.
    Buyers(oneshot::Sender<Vec<BuyerView>>),
    /// `PATCH /v1/buyers/{id}`.
    PatchBuyer(String, BuyerPatch, oneshot::Sender<Option<BuyerView>>),
    /// `POST /v1/bid` (its `id` is set by the worker).
    Quote(
        crate::call::QuoteRequest,
        oneshot::Sender<crate::call::QuoteAnswer>,
    ),
}

/// The INVITE-in → buyer-INVITE-out delays a worker measured, for the shutdown report.
#[derive(Debug, Default)]
pub struct Delays {
    /// Each call's first buyer INVITE.
    pub first: Latency,
    /// Failover INVITEs (the next buyer after one declined or did not answer).
    pub failover: Latency,
    /// How long each UDP datagram waited in the socket before the worker read it (kernel
    /// receive time to read): the part of the delay that is queueing, not work.
    pub socket_wait: Latency,
    /// Bid requests: from the core asking to the request's task starting (on this worker's
    /// runtime, behind its other work).
    pub bid_start: Latency,
    /// Bid answers: from the answer read to the core taking it (the hand-off back).
    pub bid_handoff: Latency,
    /// Calls with real-time bidders: INVITE-in → buyer-INVITE-out less the call's slowest bid
    /// request (what DCE adds on top of its bidders).
    pub over_bidders: Latency,
}

/// Everything one worker runs with; built on the node task, run on the worker's thread.
pub struct Setup {
    /// Worker number (the shard in DCE's ids).
    pub index: usize,
    /// Its UDP sockets, one per UDP listener, in listener order.
    pub udp: Vec<std::net::UdpSocket>,
    /// Messages other workers and TCP connections hand it.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Every worker's queue (to hand on what another owns).
    pub shards: Shards,
    /// From the node task.
    pub control: mpsc::UnboundedReceiver<Control>,
    /// Builds the core on the worker's thread.
    pub core: Box<dyn FnOnce() -> EdgeCore + Send>,
    /// The worker's media relay's reports.
    pub media: mpsc::UnboundedReceiver<dce_media::MediaEvent>,
    /// Where CDRs go.
    pub sink: Box<dyn CdrSink>,
    /// Redis, for the fleet-wide checks.
    pub shared: Option<crate::shared::Shared>,
    /// The receive-side gate (node-wide per-source limits; this worker's backlog).
    pub gate: Arc<Gate>,
    /// Node-wide counters.
    pub counters: Arc<Counters>,
    /// Largest SIP message (bytes).
    pub max_message: usize,
    /// `[node] drain_timeout_s`.
    pub drain: Duration,
    /// Told this worker's number if it panics (the node then stops every worker).
    pub died: mpsc::UnboundedSender<usize>,
    /// DCE's own TCP connections to buyer trunks (shared by every worker).
    pub outbound: Arc<crate::transport::outbound::Outbound>,
    /// `[node] id`.
    pub node_id: String,
    /// STIR/SHAKEN (its fetcher answers `Query::Cert`).
    pub stir: Option<Arc<crate::stir::StirNode>>,
}

/// Start worker `setup.index` on its own thread; the handle yields its delays when it stops.
pub fn spawn(setup: Setup) -> std::io::Result<std::thread::JoinHandle<Delays>> {
    std::thread::Builder::new()
        .name(format!("dce-sip-{}", setup.index))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "SIP worker cannot start its runtime");
                    return Delays::default();
                }
            };
            let (index, died) = (setup.index, setup.died.clone());
            let run = std::panic::AssertUnwindSafe(|| {
                rt.block_on(async move { Worker::new(setup).run().await })
            });
            match std::panic::catch_unwind(run) {
                Ok(d) => d,
                Err(_) => {
                    // the panic message is already on stderr; the node stops the others
                    let _ = died.send(index);
                    std::panic::resume_unwind(Box::new("SIP worker panicked"))
                }
            }
        })
}

/// Datagrams waiting to go out of one socket.
type Outbox = Vec<(SocketAddr, Bytes)>;

struct Worker {
    index: usize,
    edge: EdgeCore,
    udp: Vec<UdpSocket>,
    /// Per socket: bound to an IPv4 address (else IPv6).
    udp_v4: Vec<bool>,
    outbox: Vec<Outbox>,
    tcp: HashMap<u64, mpsc::Sender<Bytes>>,
    outbound: Arc<crate::transport::outbound::Outbound>,
    inbound: mpsc::Receiver<Inbound>,
    shards: Shards,
    control: mpsc::UnboundedReceiver<Control>,
    media: mpsc::UnboundedReceiver<dce_media::MediaEvent>,
    sink: Box<dyn CdrSink>,
    shared: Option<crate::shared::Shared>,
    gate: Arc<Gate>,
    counters: Arc<Counters>,
    max_message: usize,
    drain: Duration,
    delays: Delays,
    answers_tx: mpsc::UnboundedSender<(LookupId, Answer, Option<Instant>)>,
    answers: mpsc::UnboundedReceiver<(LookupId, Answer, Option<Instant>)>,
    /// The bid-request client, made on the first bid request.
    rtb: Option<crate::rtb::client::Client>,
    /// This node's id (the bid requests' loop guard).
    node_id: String,
    /// Bid requests (`POST /v1/bid`) the core has not answered yet, by id.
    quotes: HashMap<u64, oneshot::Sender<crate::call::QuoteAnswer>>,
    next_quote: u64,
    /// [`Delays::bid_start`], recorded by the requests' tasks.
    bid_started: Arc<std::sync::Mutex<Latency>>,
    /// STIR/SHAKEN's certificate fetcher.
    stir: Option<Arc<crate::stir::StirNode>>,
}

/// Batches read from one socket before the worker looks at its other inputs again.
const BATCHES_PER_TURN: usize = 4;

impl Worker {
    fn new(s: Setup) -> Worker {
        let udp: Vec<UdpSocket> = s
            .udp
            .into_iter()
            .filter_map(|sock| match UdpSocket::from_std(sock) {
                Ok(u) => Some(u),
                Err(e) => {
                    tracing::error!(error = %e, "SIP worker cannot register a UDP socket");
                    None
                }
            })
            .collect();
        let (answers_tx, answers) = mpsc::unbounded_channel();
        Worker {
            index: s.index,
            edge: (s.core)(),
            outbox: udp.iter().map(|_| Vec::new()).collect(),
            udp_v4: udp
                .iter()
                .map(|u| u.local_addr().map(|a| a.is_ipv4()).unwrap_or(true))
                .collect(),
            udp,
            tcp: HashMap::new(),
            outbound: s.outbound,
            inbound: s.inbound,
            shards: s.shards,
            control: s.control,
            media: s.media,
            sink: s.sink,
            shared: s.shared,
            gate: s.gate,
            counters: s.counters,
            max_message: s.max_message,
            drain: s.drain,
            delays: Delays::default(),
            answers_tx,
            answers,
            rtb: None,
            node_id: s.node_id,
            stir: s.stir,
            quotes: HashMap::new(),
            next_quote: 1,
            bid_started: Arc::default(),
        }
    }

    /// End every call with BYE; returns how long to wait for the BYEs' answers.
    fn end_calls(&mut self) -> Instant {
        let active = self.edge.calls().active_calls();
        tracing::debug!(
            worker = self.index,
            active_calls = active,
            "ending active calls"
        );
        self.edge.handle_input(Input::Shutdown, Instant::now());
        let busy = active > 0 || self.edge.calls().pending_cdrs() > 0;
        Instant::now()
            + if busy {
                Duration::from_secs(3)
            } else {
                Duration::ZERO
            }
    }

    async fn run(mut self) -> Delays {
        let mut rbuf = RecvBatch::new(self.max_message + 1);
        let mut stopping: Option<Instant> = None;
        let mut draining: Option<Instant> = None;
        let far = || Instant::now() + Duration::from_secs(3600);
        let mut inbound_closed = false;
        // the socket the next readiness check starts from (see `Readable`)
        let mut turn = 0;
        loop {
            if let (Some(until), None) = (draining, stopping) {
                if self.edge.calls().active_calls() == 0 || Instant::now() >= until {
                    stopping = Some(self.end_calls());
                }
            }
            if let Some(deadline) = stopping {
                let idle =
                    self.edge.calls().active_calls() == 0 && self.edge.calls().pending_cdrs() == 0;
                if Instant::now() >= deadline || idle {
                    // Whatever still waits for a media report is written without it.
                    self.edge.calls().flush_cdrs();
                    self.flush().await;
                    if let Ok(s) = self.bid_started.lock() {
                        self.delays.bid_start.merge(&s);
                    }
                    return self.delays;
                }
            }
            let wake = self
                .edge
                .poll_timeout()
                .unwrap_or_else(far)
                .min(stopping.unwrap_or_else(far))
                .min(draining.unwrap_or_else(far));
            tokio::select! {
                c = self.control.recv() => match c {
                    Some(Control::Api(req)) => self.on_api(req),
                    Some(Control::Reload { snapshot, carriers, shared, stir }) => {
                        self.edge.calls().set_shared(shared);
                        self.edge.calls().set_stir(stir.as_ref().map(|n| n.stir.clone()));
                        self.stir = stir;
                        self.edge.calls().reload(snapshot, &carriers);
                    }
                    Some(Control::Drain) if stopping.is_none() && draining.is_none() => {
                        if self.edge.calls().active_calls() == 0 || self.drain.is_zero() {
                            stopping = Some(self.end_calls());
                        } else {
                            self.edge.calls().stop_accepting();
                            draining = Some(Instant::now() + self.drain);
                        }
                    }
                    Some(Control::Drain) => {}
                    Some(Control::EndNow) | None => {
                        if stopping.is_none() {
                            stopping = Some(self.end_calls());
                        }
                    }
                },
                Some(ev) = self.media.recv() => self.edge.handle_input(Input::Media(ev), Instant::now()),
                Some((id, answer, read)) = self.answers.recv() => {
                    let now = Instant::now();
                    if let Some(read) = read {
                        self.delays.bid_handoff.record(now.saturating_duration_since(read));
                    }
                    self.edge.handle_input(Input::Lookup { id, answer }, now);
                }
                r = Readable(&self.udp, turn) => match r {
                    Ok(i) => {
                        turn = i + 1;
                        self.read_udp(i, &mut rbuf).await
                    }
                    Err(e) => tracing::debug!(error = %e, "udp readiness error"),
                },
                item = self.inbound.recv(), if !inbound_closed => match item {
                    Some(Inbound::TcpOpened { conn, tx }) => {
                        self.tcp.insert(conn, tx);
                    }
                    Some(Inbound::TcpClosed { conn }) => {
                        self.tcp.remove(&conn);
                    }
                    Some(Inbound::Unreachable { addr }) => {
                        self.edge.handle_input(Input::Unreachable { addr }, Instant::now());
                    }
                    Some(Inbound::Message { bytes, from, at }) => {
                        let now = Instant::now();
                        self.gate.dequeued(self.index, at, now);
                        self.edge.handle_input(Input::Bytes { bytes, from, at }, now);
                    }
                    // the node task holds a sender until every worker has stopped
                    None => inbound_closed = true,
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.edge.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
        }
    }

    /// Read what socket `i` holds, a few batches at most, flushing after each.
    async fn read_udp(&mut self, i: usize, rbuf: &mut RecvBatch) {
        for _ in 0..BATCHES_PER_TURN {
            let sock = &self.udp[i];
            let fd = sock.as_raw_fd();
            match sock.try_io(Interest::READABLE, || rbuf.recv(fd)) {
                Ok(n) => {
                    for k in 0..n {
                        if let Some(d) = rbuf.get(k) {
                            self.on_datagram(i, d);
                        }
                    }
                    self.flush().await;
                    if n < BATCH {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP errors from earlier sends surface here on Linux; they are not fatal.
                Err(e) => tracing::debug!(error = %e, "udp receive error"),
            }
        }
    }

    fn on_datagram(&mut self, sock: usize, d: mmsg::Datagram<'_>) {
        if d.truncated || d.bytes.len() > self.max_message {
            self.counters.inc(Counter::DroppedOversize);
            tracing::info!(from = %d.from, "dropped a UDP datagram over the {}-byte limit", self.max_message);
            return;
        }
        let now = Instant::now();
        self.delays.socket_wait.record(d.waited);
        let at = now.checked_sub(d.waited).unwrap_or(now);
        let from = Peer {
            transport: Transport::Udp,
            addr: d.from,
            conn: Some(sock as u64),
        };
        match self
            .gate
            .check(d.bytes, from, self.inbound.len(), d.waited, now)
        {
            Admit::Drop => return,
            Admit::Answer(t) => {
                self.outbox[sock].push((t.to.addr, t.bytes));
                return;
            }
            Admit::Queue => {}
        }
        let bytes = Bytes::copy_from_slice(d.bytes);
        let owner = dispatch::owner(&bytes, self.shards.len());
        if owner != self.index {
            let item = Inbound::Message { bytes, from, at };
            match self.shards.queue(owner).try_send(item) {
                Ok(()) => self.counters.inc(Counter::HandedOn),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.inc(Counter::DroppedQueueFull)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
            return;
        }
        self.edge
            .handle_input(Input::Bytes { bytes, from, at }, now);
    }

    /// Carry out everything the core asked for (sends, CDRs, lookups), then note the delay of
    /// every buyer INVITE that just went out.
    async fn flush(&mut self) {
        let mut unreachable = Vec::new();
        loop {
            self.drain_outputs(&mut unreachable);
            if unreachable.is_empty() {
                break;
            }
            // Buyer addresses DCE cannot connect to now: their attempts move on at once.
            for addr in unreachable.drain(..) {
                self.edge
                    .handle_input(Input::Unreachable { addr }, Instant::now());
            }
        }
        self.send_queued().await;
    }

    /// Hand out what the core produced; TCP messages to buyer addresses in backoff go into
    /// `unreachable`.
    fn drain_outputs(&mut self, unreachable: &mut Vec<SocketAddr>) {
        while let Some(out) = self.edge.poll_output() {
            match out {
                Output::Transmit(t) => match t.to.transport {
                    Transport::Udp => match self.udp_for(&t.to) {
                        Some(i) => self.outbox[i].push((t.to.addr, t.bytes)),
                        None => self.counters.inc(Counter::UdpSendFailed),
                    },
                    Transport::Tcp | Transport::Tls if t.to.conn.is_none() => {
                        // DCE's own connection to a buyer trunk (opened on first use).
                        match self.outbound.send(t.to, t.bytes) {
                            Ok(()) => {}
                            Err(crate::transport::outbound::SendError::Backoff) => {
                                self.counters.inc(Counter::TcpSendFailed);
                                unreachable.push(t.to.addr);
                            }
                            Err(crate::transport::outbound::SendError::Full) => {
                                self.counters.inc(Counter::TcpSendFailed);
                                tracing::info!(to = %t.to.addr, "TCP connection to buyer backed up; message dropped");
                            }
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        let sent =
                            t.to.conn
                                .and_then(|c| self.tcp.get(&c))
                                .map(|tx| tx.try_send(t.bytes).is_ok())
                                .unwrap_or(false);
                        if !sent {
                            self.counters.inc(Counter::TcpSendFailed);
                            tracing::info!(to = %t.to.addr, "TCP connection gone or backed up; message dropped");
                        }
                    }
                },
                Output::Cdr(cdr) => self.sink.emit(*cdr),
                Output::Quoted(id, answer) => {
                    if let Some(reply) = self.quotes.remove(&id) {
                        let _ = reply.send(answer);
                    }
                }
                Output::Remember(w) => {
                    if let Some(shared) = &self.shared {
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            if let Err(e) = shared.dup_record(&w).await {
                                tracing::warn!(error = %e, stage = w.stage.as_str(), "duplicate rules: the call was not written to the fleet's memory (Redis); this node remembers it");
                            }
                        });
                    }
                }
                Output::Caps(w) => {
                    if let Some(caps) = self.shared.as_ref().and_then(|s| s.caps()) {
                        caps.write(w);
                    }
                }
                Output::Lookup(req) => {
                    let tx = self.answers_tx.clone();
                    let check = match req.query {
                        crate::call::Query::Lease(ask) => {
                            match self.shared.as_ref().and_then(|s| s.caps()) {
                                Some(caps) => caps.take(ask, req.id, tx),
                                None => {
                                    let answer = crate::call::lookup::LeaseAnswer {
                                        result: crate::call::lookup::LeaseResult::Error(
                                            "no Redis".into(),
                                        ),
                                        nodes: 0,
                                    };
                                    let _ = tx.send((req.id, Answer::Lease(answer), None));
                                }
                            }
                            continue;
                        }
                        crate::call::Query::Shared(check) => check,
                        crate::call::Query::Bid(q) => {
                            self.ping(req.id, *q, req.deadline);
                            continue;
                        }
                        crate::call::Query::Cert(x5u) => {
                            let fetcher = self.stir.as_ref().map(|n| n.fetcher.clone());
                            tokio::spawn(async move {
                                let r = match fetcher {
                                    Some(f) => {
                                        let now_s = chrono::Utc::now().timestamp();
                                        f.signer(&x5u, now_s).await
                                    }
                                    None => Err(crate::stir::Failure::FetchFailed),
                                };
                                let _ = tx.send((req.id, Answer::Cert(r), None));
                            });
                            continue;
                        }
                        crate::call::Query::Duplicates(q) => {
                            let shared = self.shared.clone();
                            tokio::spawn(async move {
                                let r = match shared {
                                    Some(s) => s.dup_check(&q).await,
                                    None => Err("no Redis".into()),
                                };
                                let _ = tx.send((req.id, Answer::Duplicates(r), None));
                            });
                            continue;
                        }
                    };
                    match &self.shared {
                        Some(shared) => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let r = shared.check(&check).await;
                                let _ = tx.send((req.id, Answer::Shared(r), None));
                            });
                        }
                        None => {
                            let _ = tx.send((
                                req.id,
                                Answer::Shared(crate::call::RemoteResult::Error("no Redis".into())),
                                None,
                            ));
                        }
                    }
                }
            }
        }
    }

    /// Send a bid request on this worker's pooled client; its answer comes back as a lookup
    /// answer (never after `deadline`: the ping gives up then).
    fn ping(&mut self, id: LookupId, q: crate::call::BidQuery, deadline: std::time::Instant) {
        let tx = self.answers_tx.clone();
        if self.rtb.is_none() {
            match crate::rtb::client::Client::new(&self.node_id) {
                Ok(c) => self.rtb = Some(c),
                Err(e) => tracing::error!(error = %e, "bid-request client cannot start"),
            }
        }
        let Some(client) = self.rtb.clone() else {
            let pinged = crate::rtb::client::Pinged {
                result: crate::rtb::PingResult::Error("no client".into()),
                latency_ms: 0,
                latency_us: 0,
                status: None,
            };
            let _ = tx.send((
                id,
                Answer::Bid(Box::new(crate::call::BidAnswer {
                    buyer: q.buyer,
                    pinged,
                })),
                None,
            ));
            return;
        };
        // The call stops waiting at `deadline` (its core timer); the exchange itself runs on to
        // the buyer's own timeout, so an answer that is merely late still returns its
        // connection to the pool. Cutting every late request off at the call's deadline closed
        // its connection, and a bidder slower than the deadline then got a new TCP (and TLS)
        // connection per ping: at 10 bidders x 1,000 calls/s that was 72,649 connections in
        // 10 s and not one answer (decision 0014).
        let own = std::time::Instant::now()
            + std::time::Duration::from_millis(u64::from(q.rtb.timeout_ms));
        let deadline = deadline.max(own);
        let asked = Instant::now();
        let started = self.bid_started.clone();
        tokio::spawn(async move {
            if let Ok(mut s) = started.lock() {
                s.record(asked.elapsed());
            }
            let pinged = client.ping(&q.rtb, &q.facts, deadline).await;
            let _ = tx.send((
                id,
                Answer::Bid(Box::new(crate::call::BidAnswer {
                    buyer: q.buyer,
                    pinged,
                })),
                Some(Instant::now()),
            ));
        });
    }

    /// Wake the relay for this turn's calls, then send the queued datagrams.
    async fn send_queued(&mut self) {
        // the relay learns of this turn's calls before their SIP goes out
        self.edge.calls().flush_media();
        for i in 0..self.outbox.len() {
            if !self.outbox[i].is_empty() {
                let out = std::mem::take(&mut self.outbox[i]);
                self.send_all(i, &out).await;
                self.outbox[i] = out;
                self.outbox[i].clear();
            }
        }
        let now = Instant::now();
        for m in self.edge.calls().take_invite_marks() {
            let d = now.saturating_duration_since(m.received);
            if m.failover {
                self.delays.failover.record(d);
            } else {
                self.delays.first.record(d);
                if let Some(us) = m.bidders_us {
                    // What DCE added on top of its slowest bidder.
                    let waited = Duration::from_micros(u64::from(us));
                    self.delays.over_bidders.record(d.saturating_sub(waited));
                }
            }
        }
    }

    /// Send `out` from socket `i`, a batch per system call; waits while the socket's send
    /// buffer is full; a datagram the kernel refuses is counted and skipped.
    async fn send_all(&self, i: usize, out: &[(SocketAddr, Bytes)]) {
        let sock = &self.udp[i];
        let fd = sock.as_raw_fd();
        let mut off = 0;
        let mut batch: Vec<(SocketAddr, &[u8])> = Vec::with_capacity(BATCH.min(out.len()));
        while off < out.len() {
            batch.clear();
            batch.extend(out[off..].iter().take(BATCH).map(|(a, b)| (*a, &b[..])));
            match mmsg::send(fd, &batch) {
                Sent::Some(n) => off += n,
                Sent::Failed(code) => {
                    self.counters.inc(Counter::UdpSendFailed);
                    tracing::debug!(to = %out[off].0, error = %std::io::Error::from_raw_os_error(code), "udp send failed");
                    off += 1;
                }
                Sent::WouldBlock => {
                    if sock.writable().await.is_err() {
                        self.counters.inc(Counter::UdpSendFailed);
                        off += 1;
                    }
                }
            }
        }
    }

    /// The socket for `to`: the one it came in on, else the first of its address family.
    fn udp_for(&self, to: &Peer) -> Option<usize> {
        let v4 = to.addr.is_ipv4();
        let idx = to.conn.unwrap_or(0) as usize;
        match self.udp_v4.get(idx) {
            Some(&f) if f == v4 => Some(idx),
            _ => self.udp_v4.iter().position(|&f| f == v4),
        }
    }

    fn on_api(&mut self, req: ShardApi) {
        let now = Instant::now();
        match req {
            ShardApi::Calls(reply) => {
                let _ = reply.send(self.edge.calls().calls_view(now));
            }
            ShardApi::Call(id, reply) => {
                let _ = reply.send(self.edge.calls().call_view(&id, now));
            }
            ShardApi::Hangup(id, reply) => {
                let _ = reply.send(self.edge.hang_up(&id, now));
            }
            ShardApi::Buyers(reply) => {
                let _ = reply.send(self.edge.calls().buyers_view());
            }
            ShardApi::PatchBuyer(id, patch, reply) => {
                let _ = reply.send(self.edge.calls().patch_buyer(&id, &patch));
            }
            ShardApi::Quote(mut req, reply) => {
                req.id = self.next_quote;
                self.next_quote += 1;
                self.quotes.insert(req.id, reply);
                self.edge.handle_input(Input::Quote(req), now);
            }
        }
    }
}

/// Resolves with the index of a readable socket of `socks`, looking from `start` on (the
/// worker moves `start` each turn, so a busy first listener cannot starve the others; pending
/// forever without sockets).
struct Readable<'a>(&'a [UdpSocket], usize);

impl Future for Readable<'_> {
    type Output = std::io::Result<usize>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let n = self.0.len();
        for k in 0..n {
            let i = (self.1 + k) % n;
            let s = &self.0[i];
            match s.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(i)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}
