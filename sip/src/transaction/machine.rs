//! The four transaction state machines of RFC 3261 §17.1.1, §17.1.2, §17.2.1, §17.2.2, with
//! the Accepted state of RFC 6026 §7.1–7.2. Each transition records its effects in [`Fx`];
//! the layer turns them into transmissions, events and timer-heap entries.

use super::timer::{Timer, TimerConfig};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Which of the four machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INVITE client transaction (§17.1.1).
    ClientInvite,
    /// Non-INVITE client transaction (§17.1.2).
    ClientNonInvite,
    /// INVITE server transaction (§17.2.1).
    ServerInvite,
    /// Non-INVITE server transaction (§17.2.2).
    ServerNonInvite,
}

/// Transaction states (figures 5–8 of RFC 3261, amended by RFC 6026).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// INVITE client, request sent, nothing heard.
    Calling,
    /// Non-INVITE client sent / non-INVITE server received, no response yet.
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final non-2xx (INVITE) or any final (non-INVITE) response was received or sent.
    Completed,
    /// RFC 6026: a 2xx to an INVITE was received (client) or sent (server).
    Accepted,
    /// INVITE server: the ACK for a non-2xx arrived.
    Confirmed,
    /// Gone.
    Terminated,
}

/// What a transition asks for.
#[derive(Debug, Default)]
pub(crate) struct Fx {
    /// Bytes to send to the transaction's peer.
    pub send: Vec<Bytes>,
    /// Deliver the message that caused the transition to the TU.
    pub deliver: bool,
    /// The transaction timed out (B, F, H): tell the TU.
    pub timeout: bool,
    /// Timers that were (re)armed, for the heap.
    pub armed: Vec<(Timer, Instant)>,
}

/// One transaction's state machine.
#[derive(Debug)]
pub(crate) struct Machine {
    pub kind: Kind,
    pub state: State,
    pub reliable: bool,
    /// Client: the request as sent (retransmitted by A/E). Server: unused.
    pub request: Bytes,
    /// Client INVITE: the ACK for a non-2xx final, once built.
    pub ack: Option<Bytes>,
    /// Server: the last response sent (retransmitted on request retransmission and by G).
    pub last_response: Option<Bytes>,
    /// Current retransmit interval of A, E or G.
    interval: Duration,
    deadlines: [Option<Instant>; 12],
}

impl Machine {
    fn new(kind: Kind, state: State, reliable: bool, request: Bytes) -> Machine {
        Machine {
            kind,
            state,
            reliable,
            request,
            ack: None,
            last_response: None,
            interval: Duration::ZERO,
            deadlines: [None; 12],
        }
    }

    /// The deadline of a timer, if armed.
    pub fn deadline(&self, t: Timer) -> Option<Instant> {
        self.deadlines[t.index()]
    }

    fn arm(&mut self, t: Timer, at: Instant, fx: &mut Fx) {
        self.deadlines[t.index()] = Some(at);
        fx.armed.push((t, at));
    }

    fn disarm(&mut self, t: Timer) {
        self.deadlines[t.index()] = None;
    }

    fn disarm_all(&mut self) {
        self.deadlines = [None; 12];
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.disarm_all();
    }

    /// Enter a wait state for `d`, or terminate at once when `d` is zero (reliable transport).
    fn wait_or_terminate(&mut self, t: Timer, d: Duration, now: Instant, fx: &mut Fx) {
        if d.is_zero() {
            self.terminate();
        } else {
            self.arm(t, now + d, fx);
        }
    }

    // ---- client side -------------------------------------------------------------------

    /// Start a client transaction: the request is sent and A/B or E/F are armed.
    pub fn start_client(
        kind: Kind,
        request: Bytes,
        reliable: bool,
        now: Instant,
        cfg: &TimerConfig,
        fx: &mut Fx,
    ) -> Machine {
        let invite = kind == Kind::ClientInvite;
        let mut m = Machine::new(
            kind,
            if invite {
                State::Calling
            } else {
                State::Trying
            },
            reliable,
            request,
        );
        fx.send.push(m.request.clone());
        m.interval = cfg.t1;
        if !reliable {
            m.arm(if invite { Timer::A } else { Timer::E }, now + cfg.t1, fx);
        }
        m.arm(
            if invite { Timer::B } else { Timer::F },
            now + cfg.t1x64(),
            fx,
        );
        m
    }

    /// A response matched this client transaction. `ack` builds the ACK for a non-2xx final
    /// (only called for INVITE).
    pub fn client_response(
        &mut self,
        code: u16,
        now: Instant,
        cfg: &TimerConfig,
        ack: impl FnOnce() -> Bytes,
        fx: &mut Fx,
    ) {
        match (self.kind, self.state) {
            (Kind::ClientInvite, State::Calling | State::Proceeding) => {
                self.disarm(Timer::A);
                self.disarm(Timer::B);
                fx.deliver = true;
                if code < 200 {
                    self.state = State::Proceeding;
                } else if code < 300 {
                    self.state = State::Accepted;
                    self.arm(Timer::M, now + cfg.t1x64(), fx);
                } else {
                    self.state = State::Completed;
                    let a = ack();
                    fx.send.push(a.clone());
                    self.ack = Some(a);
                    let d = if self.reliable {
                        Duration::ZERO
                    } else {
                        cfg.timer_d()
                    };
                    self.wait_or_terminate(Timer::D, d, now, fx);
                }
            }
            (Kind::ClientInvite, State::Completed) if code >= 300 => {
                if let Some(a) = &self.ack {
                    fx.send.push(a.clone());
                }
            }
            (Kind::ClientInvite, State::Accepted) => {
                // RFC 6026 §7.2: 2xx retransmissions go to the TU, which re-sends its ACK.
                fx.deliver = (200..300).contains(&code);
            }
            (Kind::ClientNonInvite, State::Trying | State::Proceeding) => {
                fx.deliver = true;
                if code < 200 {
                    self.state = State::Proceeding;
                } else {
                    self.state = State::Completed;
                    self.disarm(Timer::E);
                    self.disarm(Timer::F);
                    let k = if self.reliable {
                        Duration::ZERO
                    } else {
                        cfg.t4
                    };
                    self.wait_or_terminate(Timer::K, k, now, fx);
                }
            }
            _ => {}
        }
    }

    // ---- server side -------------------------------------------------------------------

    /// Start a server transaction for a new request. An INVITE server transaction sends
    /// `trying` (the 100) at once.
    pub fn start_server(kind: Kind, reliable: bool, trying: Option<Bytes>, fx: &mut Fx) -> Machine {
        let invite = kind == Kind::ServerInvite;
        let mut m = Machine::new(
            kind,
            if invite {
                State::Proceeding
            } else {
                State::Trying
            },
            reliable,
            Bytes::new(),
        );
        if let Some(t) = trying {
            fx.send.push(t.clone());
            m.last_response = Some(t);
        }
        m
    }

    /// The same request arrived again.
    pub fn server_retransmission(&mut self, fx: &mut Fx) {
        if matches!(self.state, State::Proceeding | State::Completed) {
            if let Some(r) = &self.last_response {
                fx.send.push(r.clone());
            }
        }
    }

    /// An ACK matched this INVITE server transaction (the ACK for a non-2xx final).
    pub fn server_ack(&mut self, now: Instant, cfg: &TimerConfig, fx: &mut Fx) {
        if self.kind == Kind::ServerInvite && self.state == State::Completed {
            self.state = State::Confirmed;
            self.disarm(Timer::G);
            self.disarm(Timer::H);
            let i = if self.reliable {
                Duration::ZERO
            } else {
                cfg.t4
            };
            self.wait_or_terminate(Timer::I, i, now, fx);
        }
    }

    /// The TU sends a response. Returns false when the state does not allow it.
    pub fn server_respond(
        &mut self,
        code: u16,
        bytes: Bytes,
        now: Instant,
        cfg: &TimerConfig,
        fx: &mut Fx,
    ) -> bool {
        match (self.kind, self.state) {
            (Kind::ServerInvite, State::Proceeding) => {
                fx.send.push(bytes.clone());
                self.last_response = Some(bytes);
                if (200..300).contains(&code) {
                    self.state = State::Accepted;
                    self.arm(Timer::L, now + cfg.t1x64(), fx);
                } else if code >= 300 {
                    self.state = State::Completed;
                    self.interval = cfg.t1;
                    if !self.reliable {
                        self.arm(Timer::G, now + cfg.t1, fx);
                    }
                    self.arm(Timer::H, now + cfg.t1x64(), fx);
                }
                true
            }
            (Kind::ServerInvite, State::Accepted) if (200..300).contains(&code) => {
                // RFC 6026 §7.1: the TU's 2xx retransmissions pass through.
                fx.send.push(bytes);
                true
            }
            (Kind::ServerNonInvite, State::Trying | State::Proceeding) => {
                fx.send.push(bytes.clone());
                self.last_response = Some(bytes);
                if code < 200 {
                    self.state = State::Proceeding;
                } else {
                    self.state = State::Completed;
                    let j = if self.reliable {
                        Duration::ZERO
                    } else {
                        cfg.t1x64()
                    };
                    self.wait_or_terminate(Timer::J, j, now, fx);
                }
                true
            }
            _ => false,
        }
    }

    // ---- timers ------------------------------------------------------------------------

    /// A timer fired (the layer has checked it is still armed for this instant).
    pub fn on_timer(&mut self, t: Timer, now: Instant, cfg: &TimerConfig, fx: &mut Fx) {
        self.disarm(t);
        match (t, self.state) {
            (Timer::A, State::Calling) => {
                fx.send.push(self.request.clone());
                self.interval *= 2;
                self.arm(Timer::A, now + self.interval, fx);
            }
            (Timer::E, State::Trying) => {
                fx.send.push(self.request.clone());
                self.interval = (self.interval * 2).min(cfg.t2);
                self.arm(Timer::E, now + self.interval, fx);
            }
            (Timer::E, State::Proceeding) => {
                fx.send.push(self.request.clone());
                self.interval = cfg.t2;
                self.arm(Timer::E, now + self.interval, fx);
            }
            (Timer::G, State::Completed) => {
                if let Some(r) = &self.last_response {
                    fx.send.push(r.clone());
                }
                self.interval = (self.interval * 2).min(cfg.t2);
                self.arm(Timer::G, now + self.interval, fx);
            }
            (Timer::B, State::Calling)
            | (Timer::F, State::Trying | State::Proceeding)
            | (Timer::H, State::Completed) => {
                fx.timeout = true;
                self.terminate();
            }
            (Timer::D, State::Completed)
            | (Timer::K, State::Completed)
            | (Timer::J, State::Completed)
            | (Timer::I, State::Confirmed)
            | (Timer::L, State::Accepted)
            | (Timer::M, State::Accepted) => self.terminate(),
            _ => {}
        }
    }
}
