//! Transaction keys: how a message finds its transaction (RFC 3261 §17.1.3, §17.2.3).

use crate::message::Message;
use crate::method::Method;

/// The identity of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxKey {
    /// Client transaction: branch of the top Via we sent plus the CSeq method (§17.1.3).
    Client {
        /// Branch we generated.
        branch: String,
        /// CSeq method (distinguishes a CANCEL from the INVITE it cancels).
        method: Method,
    },
    /// Server transaction, RFC 3261 branch: branch, sent-by and method, ACK counting as
    /// INVITE (§17.2.3).
    Server {
        /// The top Via branch.
        branch: String,
        /// The top Via sent-by, host case-folded.
        sent_by: String,
        /// The method, ACK mapped to INVITE.
        method: Method,
    },
    /// Server transaction from an RFC 2543 peer (no magic cookie): Request-URI, From tag,
    /// Call-ID, CSeq number, top Via and method (ACK mapped to INVITE).
    Rfc2543 {
        /// Request-URI as written.
        request_uri: String,
        /// From tag.
        from_tag: String,
        /// Call-ID.
        call_id: String,
        /// CSeq number.
        cseq: u32,
        /// Top via-parm as written.
        via: String,
        /// Method, ACK mapped to INVITE.
        method: Method,
    },
}

impl TxKey {
    /// The server transaction a request belongs to. `as_method` overrides the method (used to
    /// find the INVITE a CANCEL cancels, §9.2).
    pub fn server(req: &Message, as_method: Option<Method>) -> TxKey {
        let method = as_method.unwrap_or_else(|| match req.method() {
            Some(Method::Ack) | None => Method::Invite,
            Some(m) => m.clone(),
        });
        let via = req.via();
        if via.has_rfc3261_branch() {
            TxKey::Server {
                branch: via.branch().unwrap_or_default().to_owned(),
                sent_by: via.sent_by().to_ascii_lowercase(),
                method,
            }
        } else {
            TxKey::Rfc2543 {
                request_uri: req.request_uri().map(|u| u.raw.clone()).unwrap_or_default(),
                from_tag: req.from().tag().unwrap_or_default().to_owned(),
                call_id: req.call_id().to_owned(),
                cseq: req.cseq(),
                via: via.raw.clone(),
                method,
            }
        }
    }

    /// The client transaction a response belongs to.
    pub fn client_for_response(resp: &Message) -> TxKey {
        TxKey::Client {
            branch: resp.via().branch().unwrap_or_default().to_owned(),
            method: resp.cseq_method().clone(),
        }
    }
}
