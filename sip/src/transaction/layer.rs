//! The transaction layer: live transactions by key, one timer heap, output and event queues.

use super::key::TxKey;
use super::machine::{Fx, Kind, Machine, State};
use super::timer::{Timer, TimerConfig};
use crate::build::{MessageBuf, StartLineBuf};
use crate::header::HeaderName;
use crate::message::Message;
use crate::method::Method;
use crate::via::{Rport, Via};
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::SocketAddr;
use std::time::Instant;

/// Transport kind of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: unreliable, retransmission timers run.
    Udp,
    /// TCP: reliable, no retransmissions.
    Tcp,
    /// TLS over TCP: reliable, like TCP.
    Tls,
}

impl Transport {
    /// The name in a Via (`UDP`, `TCP`, `TLS`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Where a message came from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Transport.
    pub transport: Transport,
    /// Remote address.
    pub addr: SocketAddr,
    /// The local socket (UDP: listener index) or connection (TCP: connection id) the message
    /// used, when known; responses leave through the same one.
    pub conn: Option<u64>,
}

impl Peer {
    /// True for reliable transports.
    pub fn reliable(&self) -> bool {
        matches!(self.transport, Transport::Tcp | Transport::Tls)
    }

    /// Where responses to a request from this peer go (RFC 3261 §18.2.2, RFC 3581 §4).
    ///
    /// Reliable: back on the same connection. Unreliable: to the source IP (which DCE wrote
    /// into `received`), at the `rport` port when the client asked for it, else at the sent-by
    /// port (default 5060). `maddr` is deliberately not honoured: an edge that sends where a
    /// packet says, rather than where it came from, is a reflection amplifier
    /// (docs/decisions/0002-response-routing.md).
    pub fn response_target(&self, via: &Via) -> Peer {
        match self.transport {
            Transport::Tcp | Transport::Tls => *self,
            Transport::Udp => {
                let port = match via.rport {
                    Rport::Requested | Rport::Port(_) => self.addr.port(),
                    Rport::Absent => via.port.unwrap_or(5060),
                };
                Peer {
                    transport: Transport::Udp,
                    addr: SocketAddr::new(self.addr.ip(), port),
                    conn: self.conn,
                }
            }
        }
    }
}

/// Handle of a transaction, unique for the life of the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// Bytes to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: Peer,
    /// Message bytes.
    pub bytes: Bytes,
}

/// What the transaction layer tells its user (the TU: DCE's call controller).
#[derive(Debug)]
pub enum Event {
    /// A new request (not ACK) created a server transaction. `via` is the top via-parm with
    /// `received`/`rport` filled in; use it when building responses.
    Request {
        /// The server transaction.
        tx: TxId,
        /// The request.
        msg: Message,
        /// Where it came from.
        from: Peer,
        /// The annotated top via-parm.
        via: String,
    },
    /// An ACK that matched no server transaction: the ACK for a 2xx, for the dialog layer.
    Ack {
        /// The ACK.
        msg: Message,
        /// Where it came from.
        from: Peer,
    },
    /// A response for a client transaction.
    Response {
        /// The client transaction.
        tx: TxId,
        /// The response.
        msg: Message,
    },
    /// A response that matched no client transaction (e.g. a 2xx retransmission after Timer M).
    StrayResponse {
        /// The response.
        msg: Message,
        /// Where it came from.
        from: Peer,
    },
    /// A transaction timed out: B or F for a client (no final response), H for an INVITE
    /// server (no ACK for its non-2xx final).
    Timeout {
        /// The transaction.
        tx: TxId,
    },
}

/// Errors of the layer's API (misuse by the TU, not network faults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// No live transaction with this id.
    #[error("no such transaction")]
    NoSuchTransaction,
    /// The transaction's state does not allow this response (e.g. a second final).
    #[error("response not allowed in this transaction state")]
    WrongState,
    /// The request to send has no usable top Via branch or method.
    #[error("request has no Via with a branch")]
    NoBranch,
    /// A transaction with this key already exists.
    #[error("transaction already exists")]
    Duplicate,
}

struct Tx {
    key: TxKey,
    peer: Peer,
    machine: Machine,
    /// Client INVITE: the request, to build the ACK for a non-2xx.
    request_buf: Option<MessageBuf>,
}

/// Hasher for keys that are already well spread or are DCE's own sequence numbers (a
/// multiplicative mix, not a keyed hash: never use it for what a peer chooses).
#[derive(Default)]
struct MixHash(u64);

impl Hasher for MixHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type MixMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHash>>;

/// The table of live transactions. See the module docs for the calling contract.
///
/// A busy node holds a few hundred thousand transactions (each completed one waits out Timer
/// J/K/L/M, up to 32 s), and a hash table grows by rehashing every entry at once: with the
/// transactions and their string keys stored inline, one such growth stopped the SIP worker for
/// 60 ms at 2,000 calls/s. So the tables hold small entries: transactions are boxed, and the key
/// index maps a keyed 64-bit digest of the key (SipHash with a per-layer random key, so a peer
/// cannot aim collisions) to the id; a digest that two live keys share sends the second to a
/// spill table keyed by the whole key. Every lookup checks the key itself.
pub struct TransactionLayer {
    cfg: TimerConfig,
    txs: MixMap<TxId, Box<Tx>>,
    by_key: MixMap<u64, TxId>,
    spill: HashMap<TxKey, TxId>,
    digest: RandomState,
    digest_mask: u64,
    heap: BinaryHeap<Reverse<(Instant, TxId, Timer)>>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl TransactionLayer {
    /// An empty layer.
    pub fn new(cfg: TimerConfig) -> Self {
        TransactionLayer::with_digest_mask(cfg, u64::MAX)
    }

    /// A layer whose key digests keep only the bits of `mask`: tests use a small mask to make
    /// distinct keys collide and exercise the spill table.
    #[doc(hidden)]
    pub fn with_digest_mask(cfg: TimerConfig, mask: u64) -> Self {
        TransactionLayer {
            cfg,
            txs: MixMap::default(),
            by_key: MixMap::default(),
            spill: HashMap::new(),
            digest: RandomState::new(),
            digest_mask: mask,
            heap: BinaryHeap::new(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn digest_of(&self, key: &TxKey) -> u64 {
        self.digest.hash_one(key) & self.digest_mask
    }

    /// The live transaction with `key`.
    fn find(&self, key: &TxKey) -> Option<TxId> {
        if let Some(&id) = self.by_key.get(&self.digest_of(key)) {
            if self.txs.get(&id).is_some_and(|t| t.key == *key) {
                return Some(id);
            }
        }
        if self.spill.is_empty() {
            None
        } else {
            self.spill.get(key).copied()
        }
    }

    fn index(&mut self, key: &TxKey, id: TxId) {
        match self.by_key.entry(self.digest_of(key)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(id);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.spill.insert(key.clone(), id);
            }
        }
    }

    fn unindex(&mut self, key: &TxKey, id: TxId) {
        let d = self.digest_of(key);
        if self.by_key.get(&d) == Some(&id) {
            self.by_key.remove(&d);
        } else {
            self.spill.remove(key);
        }
    }

    /// Keys that share a digest with another live key (0 but for a collision).
    #[doc(hidden)]
    pub fn spilled(&self) -> usize {
        self.spill.len()
    }

    /// Room the transaction table has now (it grows with bursts; see `shrink_after_burst`).
    pub fn capacity(&self) -> usize {
        self.txs.capacity()
    }

    /// Number of live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// True when no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Every live transaction with its kind and state (leak reports).
    pub fn live(&self) -> Vec<(TxId, Kind, State)> {
        let mut v: Vec<_> = self
            .txs
            .iter()
            .map(|(id, t)| (*id, t.machine.kind, t.machine.state))
            .collect();
        v.sort_by_key(|(id, _, _)| *id);
        v
    }

    /// State of a transaction, `None` once it is gone.
    pub fn state(&self, tx: TxId) -> Option<State> {
        self.txs.get(&tx).map(|t| t.machine.state)
    }

    /// Kind of a transaction.
    pub fn kind(&self, tx: TxId) -> Option<Kind> {
        self.txs.get(&tx).map(|t| t.machine.kind)
    }

    /// The live INVITE server transaction a CANCEL refers to (§9.2).
    pub fn invite_for_cancel(&self, cancel: &Message) -> Option<TxId> {
        let key = TxKey::server(cancel, Some(Method::Invite));
        self.find(&key)
    }

    /// Next bytes to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the TU.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`TransactionLayer::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id, t))) = self.heap.peek().copied() {
            if self.is_armed(id, t, at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    fn is_armed(&self, id: TxId, t: Timer, at: Instant) -> bool {
        self.txs
            .get(&id)
            .is_some_and(|tx| tx.machine.deadline(t) == Some(at))
    }

    /// Fire every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id, t))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            if !self.is_armed(id, t, at) {
                continue;
            }
            let mut fx = Fx::default();
            if let Some(tx) = self.txs.get_mut(&id) {
                tx.machine.on_timer(t, now, &self.cfg, &mut fx);
            }
            self.apply(id, fx, None);
        }
        self.shrink_after_burst();
    }

    /// After a burst the tables keep the room they grew to (a hash table never shrinks by
    /// itself): once the live transactions fill less than a quarter of it, give half back.
    /// Hysteresis keeps this off the steady-state path; it runs when timers fire.
    fn shrink_after_burst(&mut self) {
        let live = self.txs.len().max(1024);
        if self.txs.capacity() > 4 * live {
            self.txs.shrink_to(2 * live);
            self.by_key.shrink_to(2 * live);
            self.spill.shrink_to_fit();
        }
        let timers = self.heap.len().max(4096);
        if self.heap.capacity() > 4 * timers {
            self.heap.shrink_to(2 * timers);
        }
        if self.transmits.capacity() > 4096 {
            self.transmits.shrink_to(1024);
        }
        if self.events.capacity() > 4096 {
            self.events.shrink_to(1024);
        }
    }

    /// A parsed message arrived from `from`.
    pub fn on_message(&mut self, msg: Message, from: Peer, now: Instant) {
        if msg.is_request() {
            self.on_request(msg, from, now);
        } else {
            self.on_response(msg, from, now);
        }
    }

    fn on_request(&mut self, msg: Message, from: Peer, now: Instant) {
        let key = TxKey::server(&msg, None);
        let is_ack = msg.method() == Some(&Method::Ack);
        if let Some(id) = self.find(&key) {
            let mut fx = Fx::default();
            if let Some(tx) = self.txs.get_mut(&id) {
                if is_ack {
                    if tx.machine.kind == Kind::ServerInvite && tx.machine.state == State::Accepted
                    {
                        // ACK for our 2xx arriving with the INVITE's branch (RFC 2543 peers):
                        // it belongs to the dialog.
                        self.events.push_back(Event::Ack { msg, from });
                        return;
                    }
                    tx.machine.server_ack(now, &self.cfg, &mut fx);
                } else {
                    tx.machine.server_retransmission(&mut fx);
                }
            }
            self.apply(id, fx, None);
            return;
        }
        if is_ack {
            self.events.push_back(Event::Ack { msg, from });
            return;
        }
        let via = msg
            .via()
            .annotated(&from.addr.ip().to_string(), from.addr.port());
        let peer = from.response_target(msg.via());
        let invite = msg.method() == Some(&Method::Invite);
        let kind = if invite {
            Kind::ServerInvite
        } else {
            Kind::ServerNonInvite
        };
        let trying = invite.then(|| msg.response(100, "Trying", "", Some(&via)).print());
        let mut fx = Fx::default();
        let machine = Machine::start_server(kind, peer.reliable(), trying, &mut fx);
        let id = self.insert(key, peer, machine, None);
        self.apply(id, fx, None);
        self.events.push_back(Event::Request {
            tx: id,
            msg,
            from,
            via,
        });
    }

    fn on_response(&mut self, msg: Message, from: Peer, now: Instant) {
        let key = TxKey::client_for_response(&msg);
        let Some(id) = self.find(&key) else {
            self.events.push_back(Event::StrayResponse { msg, from });
            return;
        };
        let code = msg.code().unwrap_or(0);
        let mut fx = Fx::default();
        if let Some(tx) = self.txs.get_mut(&id) {
            let req = tx.request_buf.as_ref();
            tx.machine
                .client_response(code, now, &self.cfg, || build_ack(req, &msg), &mut fx);
        }
        self.apply(id, fx, Some(msg));
    }

    /// Start a client transaction for `request` (its top Via must carry the branch) to `to`.
    pub fn send_request(
        &mut self,
        request: MessageBuf,
        to: Peer,
        now: Instant,
    ) -> Result<TxId, TxError> {
        let method = match &request.start {
            StartLineBuf::Request { method, .. } => method.clone(),
            StartLineBuf::Response { .. } => return Err(TxError::NoBranch),
        };
        let branch = request
            .header(&HeaderName::Via)
            .and_then(|v| Via::parse(v.split(',').next().unwrap_or("")).ok())
            .and_then(|v| v.branch().map(str::to_owned))
            .ok_or(TxError::NoBranch)?;
        let key = TxKey::Client {
            branch,
            method: method.clone(),
        };
        if self.find(&key).is_some() {
            return Err(TxError::Duplicate);
        }
        let kind = if method == Method::Invite {
            Kind::ClientInvite
        } else {
            Kind::ClientNonInvite
        };
        let bytes = request.print();
        let mut fx = Fx::default();
        let machine = Machine::start_client(kind, bytes, to.reliable(), now, &self.cfg, &mut fx);
        let keep = (kind == Kind::ClientInvite).then_some(request);
        let id = self.insert(key, to, machine, keep);
        self.apply(id, fx, None);
        Ok(id)
    }

    /// Forget client transaction `tx` at once: no further retransmission, timer or event, and a
    /// late response to it is a stray. For a request that has had no response at all, when the
    /// TU moves it to another server (RFC 3263 §4.3). False when `tx` is not live.
    pub fn abandon(&mut self, tx: TxId) -> bool {
        match self.txs.remove(&tx) {
            Some(t) => {
                self.unindex(&t.key, tx);
                true
            }
            None => false,
        }
    }

    /// Send a response on server transaction `tx`.
    pub fn respond(
        &mut self,
        tx: TxId,
        response: &MessageBuf,
        now: Instant,
    ) -> Result<(), TxError> {
        let code = match &response.start {
            StartLineBuf::Response { code, .. } => *code,
            StartLineBuf::Request { .. } => return Err(TxError::WrongState),
        };
        let t = self.txs.get_mut(&tx).ok_or(TxError::NoSuchTransaction)?;
        let mut fx = Fx::default();
        if !t
            .machine
            .server_respond(code, response.print(), now, &self.cfg, &mut fx)
        {
            return Err(TxError::WrongState);
        }
        self.apply(tx, fx, None);
        Ok(())
    }

    fn insert(
        &mut self,
        key: TxKey,
        peer: Peer,
        machine: Machine,
        request_buf: Option<MessageBuf>,
    ) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        self.index(&key, id);
        self.txs.insert(
            id,
            Box::new(Tx {
                key,
                peer,
                machine,
                request_buf,
            }),
        );
        id
    }

    fn apply(&mut self, id: TxId, fx: Fx, msg: Option<Message>) {
        let Some(tx) = self.txs.get(&id) else {
            return;
        };
        for bytes in fx.send {
            self.transmits.push_back(Transmit { to: tx.peer, bytes });
        }
        for (t, at) in fx.armed {
            self.heap.push(Reverse((at, id, t)));
        }
        if fx.deliver {
            if let Some(msg) = msg {
                self.events.push_back(Event::Response { tx: id, msg });
            }
        }
        if fx.timeout {
            self.events.push_back(Event::Timeout { tx: id });
        }
        if tx.machine.state == State::Terminated {
            if let Some(tx) = self.txs.remove(&id) {
                self.unindex(&tx.key, id);
            }
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): Request-URI, Call-ID, From,
/// CSeq number and the top Via of the INVITE, To of the response, the INVITE's Route headers.
fn build_ack(invite: Option<&MessageBuf>, resp: &Message) -> Bytes {
    let Some(invite) = invite else {
        return Bytes::new();
    };
    let uri = match &invite.start {
        StartLineBuf::Request { uri, .. } => uri.clone(),
        StartLineBuf::Response { .. } => String::new(),
    };
    let mut ack = MessageBuf::request(Method::Ack, uri);
    if let Some(v) = invite.header(&HeaderName::Via) {
        ack.push(HeaderName::Via, v.split(',').next().unwrap_or(v).trim());
    }
    for name in [HeaderName::MaxForwards, HeaderName::From] {
        if let Some(v) = invite.header(&name) {
            ack.push(name, v);
        }
    }
    if let Some(to) = resp.header(&HeaderName::To) {
        ack.push(HeaderName::To, to);
    }
    if let Some(v) = invite.header(&HeaderName::CallId) {
        ack.push(HeaderName::CallId, v);
    }
    ack.push(HeaderName::CSeq, format!("{} ACK", resp.cseq()));
    for (n, v) in &invite.headers {
        if *n == HeaderName::Route {
            ack.push(HeaderName::Route, v.clone());
        }
    }
    ack.print()
}
