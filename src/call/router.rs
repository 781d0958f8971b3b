//! The router: which call, and which leg of it, a message belongs to.
//!
//! Dialogs are keyed by (Call-ID, DCE's own tag on that leg): the carrier's in-dialog requests
//! carry our A-leg tag as their To tag, a buyer's carry the tag we put in that leg's From. Each
//! buyer leg has its own Call-ID and tag, so a request always names exactly one leg — a
//! losing buyer's BYE names the losing leg, never "side B". Transactions map to the call and
//! what the transaction is for. Legs whose call is over but whose INVITE is still pending live
//! on as orphans until it completes (a late 2xx is ACKed and hung up).

use super::leg::Dialog;
use super::lookup::LookupId;
use super::state::{CallKey, LegRef};
use dce_sip::transaction::{Peer, TxId};
use dce_sip::{Message, MessageBuf};
use std::collections::HashMap;

/// What one of our client transactions is for.
#[derive(Debug)]
pub enum TxRole {
    /// The INVITE of buyer leg `n`.
    Invite(usize),
    /// A BYE or CANCEL we sent; its answer needs nothing.
    Fire,
    /// A request mirrored from `from`; its final response answers the server transaction.
    Relay(Box<Relay>),
    /// A BYE to a buyer that has credentials: a `401`/`407` to it is answered once.
    Authed(Box<Authed>),
}

/// A request DCE sent a buyer with digest credentials at hand.
#[derive(Debug)]
pub struct Authed {
    /// The request as sent.
    pub req: dce_sip::MessageBuf,
    /// Where.
    pub peer: dce_sip::transaction::Peer,
    /// The buyer's credentials.
    pub auth: dce_routing::BuyerAuth,
    /// The leg's nonce count when the request was sent.
    pub nonce_count: dce_sip::digest::NonceCount,
}

/// A request mirrored from one leg to the other.
#[derive(Debug)]
pub struct Relay {
    /// The server transaction of the original request.
    pub server_tx: TxId,
    /// The original request.
    pub req: Message,
    /// Its top Via as answered.
    pub via: String,
    /// The leg it came from.
    pub from: LegRef,
    /// Sent to a buyer with credentials: a `401`/`407` to it gets one answer.
    pub retry: Option<Box<Authed>>,
}

/// A buyer leg whose call is gone, waiting for its INVITE to finish.
#[derive(Debug)]
pub struct Orphan {
    /// The INVITE we sent (for CANCEL).
    pub invite: MessageBuf,
    /// Where it went.
    pub peer: Peer,
    /// The leg's dialog (for ACK and BYE of a late 2xx).
    pub dialog: Dialog,
    /// CANCEL is owed once a provisional arrives.
    pub cancel_pending: bool,
}

/// Dialogs, transactions and lookups to calls.
#[derive(Debug, Default)]
pub struct Router {
    dialogs: HashMap<(String, String), (CallKey, LegRef)>,
    server_invites: HashMap<TxId, CallKey>,
    client: HashMap<TxId, (CallKey, TxRole)>,
    orphans: HashMap<TxId, Orphan>,
    lookups: HashMap<LookupId, CallKey>,
}

/// How many entries of each kind the router holds (leak checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouterSizes {
    /// Dialog entries.
    pub dialogs: usize,
    /// Server INVITE transactions of calls.
    pub server_invites: usize,
    /// Client transactions of calls.
    pub client: usize,
    /// Orphaned buyer legs.
    pub orphans: usize,
    /// Outstanding lookups.
    pub lookups: usize,
}

impl Router {
    /// Route requests with (`call_id`, our `tag`) to `leg` of `key`.
    pub fn add_dialog(&mut self, call_id: &str, tag: &str, key: CallKey, leg: LegRef) {
        self.dialogs
            .insert((call_id.to_owned(), tag.to_owned()), (key, leg));
    }

    /// Stop routing (`call_id`, `tag`).
    pub fn remove_dialog(&mut self, call_id: &str, tag: &str) {
        self.dialogs.remove(&(call_id.to_owned(), tag.to_owned()));
    }

    /// The leg a message with this Call-ID and our tag belongs to.
    pub fn dialog(&self, call_id: &str, tag: &str) -> Option<(CallKey, LegRef)> {
        // A tuple key of Strings needs owned probes: two small allocations per in-dialog
        // message (issue #12 measures whether that matters).
        self.dialogs
            .get(&(call_id.to_owned(), tag.to_owned()))
            .copied()
    }

    /// The carrier INVITE `tx` is call `key`'s.
    pub fn add_server_invite(&mut self, tx: TxId, key: CallKey) {
        self.server_invites.insert(tx, key);
    }

    /// The call of carrier INVITE `tx`.
    pub fn server_invite(&self, tx: TxId) -> Option<CallKey> {
        self.server_invites.get(&tx).copied()
    }

    /// Forget carrier INVITE `tx`.
    pub fn remove_server_invite(&mut self, tx: TxId) {
        self.server_invites.remove(&tx);
    }

    /// Client transaction `tx` is `role` of call `key`.
    pub fn add_client(&mut self, tx: TxId, key: CallKey, role: TxRole) {
        self.client.insert(tx, (key, role));
    }

    /// What client transaction `tx` is for.
    pub fn client(&self, tx: TxId) -> Option<&(CallKey, TxRole)> {
        self.client.get(&tx)
    }

    /// Forget client transaction `tx`.
    pub fn remove_client(&mut self, tx: TxId) -> Option<(CallKey, TxRole)> {
        self.client.remove(&tx)
    }

    /// Keep an ended call's pending buyer INVITE.
    pub fn add_orphan(&mut self, tx: TxId, o: Orphan) {
        self.orphans.insert(tx, o);
    }

    /// The orphan of INVITE `tx`.
    pub fn orphan_mut(&mut self, tx: TxId) -> Option<&mut Orphan> {
        self.orphans.get_mut(&tx)
    }

    /// Forget the orphan of INVITE `tx`.
    pub fn remove_orphan(&mut self, tx: TxId) -> Option<Orphan> {
        self.orphans.remove(&tx)
    }

    /// Lookup `id` belongs to call `key`.
    pub fn add_lookup(&mut self, id: LookupId, key: CallKey) {
        self.lookups.insert(id, key);
    }

    /// Forget lookup `id`, returning its call.
    pub fn remove_lookup(&mut self, id: LookupId) -> Option<CallKey> {
        self.lookups.remove(&id)
    }

    /// Entry counts, for leak checks.
    pub fn sizes(&self) -> RouterSizes {
        RouterSizes {
            dialogs: self.dialogs.len(),
            server_invites: self.server_invites.len(),
            client: self.client.len(),
            orphans: self.orphans.len(),
            lookups: self.lookups.len(),
        }
    }
}
