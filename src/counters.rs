//! Counters of what DCE did with every message at the edge, one per reason. Lock-free; read
//! by the shutdown report and the periodic log line (and by the metrics endpoint later).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// One counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Counter {
            $( $(#[$doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in report order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// Stable name for logs and metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $( Counter::$variant => $name, )*
                }
            }
        }
    };
}

counters! {
    /// Requests that parsed.
    RxRequest => "rx_request",
    /// Responses that parsed.
    RxResponse => "rx_response",
    /// OPTIONS answered 200.
    Options200 => "answered_200_options",
    /// CANCEL answered 200 (and its INVITE 487).
    Cancel200 => "answered_200_cancel",
    /// Malformed request answered 400.
    Malformed400 => "rejected_400_malformed",
    /// SIP version other than 2.0 answered 505.
    Version505 => "rejected_505_version",
    /// Unknown method answered 501.
    UnknownMethod501 => "rejected_501_unknown_method",
    /// Known method DCE does not serve answered 405.
    MethodNotAllowed405 => "rejected_405_method",
    /// In-dialog request with no dialog (or CANCEL with no INVITE) answered 481.
    NoDialog481 => "rejected_481_no_transaction",
    /// Request-URI scheme DCE does not serve answered 416.
    UnsupportedScheme416 => "rejected_416_scheme",
    /// Max-Forwards 0 answered 483.
    TooManyHops483 => "rejected_483_max_forwards",
    /// Unsupported Require/Proxy-Require answered 420.
    BadExtension420 => "rejected_420_require",
    /// Body of a type DCE does not read answered 415.
    UnsupportedMedia415 => "rejected_415_content_type",
    /// Accept without SDP answered 406.
    NotAcceptable406 => "rejected_406_accept",
    /// INVITE from a source that is no configured carrier: 403.
    Invite403 => "rejected_403_unknown_source",
    /// No campaign for the dialled number: 404.
    NoCampaign404 => "rejected_404_no_campaign",
    /// No eligible buyer: 480.
    NoBuyer480 => "rejected_480_no_buyer",
    /// Every buyer attempt failed: 480.
    AllFailed480 => "failed_480_all_attempts",
    /// Carrier over its max_cps: 503.
    CarrierCps503 => "rejected_503_carrier_cps",
    /// DCE overloaded or shutting down: 503.
    Overload503 => "rejected_503_overload",
    /// No RTP ports left for a new call: 503.
    MediaPorts503 => "rejected_503_media_ports",
    /// In-dialog request (or ACK) with a leg's dialog ids from another address: 403/dropped.
    ForeignInDialog403 => "rejected_403_foreign_in_dialog",
    /// In-dialog request on a leg that is not part of the established dialog: 481.
    NotEstablished481 => "rejected_481_not_established",
    /// A buyer INVITE over the UDP size limit (RFC 3261 §18.1.1): attempt skipped.
    TooLargeForUdp => "buyer_invite_too_large_for_udp",
    /// A buyer attempt moved to the next target its DNS gives (no response, timeout, 503).
    TargetFailover => "buyer_target_failover",
    /// A buyer trunk went down (OPTIONS pings failed, or its breaker opened).
    BuyerDown => "buyer_trunk_down",
    /// A buyer trunk came back up (OPTIONS pings answered again).
    BuyerUp => "buyer_trunk_up",
    /// A buyer paused itself: its calls rang out (`pause_after_unanswered`).
    BuyerAutoPaused => "buyer_auto_paused",
    /// Carrier SDP DCE cannot anchor: 488.
    BadSdp488 => "rejected_488_sdp",
    /// Calls ended because no RTP flowed for rtp_timeout_s.
    RtpTimeout => "calls_rtp_timeout",
        /// A shared (Redis) compliance lookup failed or missed its deadline.
    LookupError => "compliance_lookup_errors",
    /// The fleet-wide duplicate lookup failed or missed its deadline (this node's memory
    /// decided).
    DuplicateLookupError => "duplicate_lookup_errors",
    /// A capped buyer's fleet-wide caps could not be read (Redis failed or was late):
    /// `on_cap_error` decided.
    CapLookupError => "cap_lookup_errors",
    /// Compliance verdict: 603.
    Compliance603 => "rejected_603_compliance",
    /// The campaign's `stir` policy refused the caller's identity (428, 436, 437, 438, 403,
    /// 608).
    StirRejected => "rejected_stir",
    /// A call went on with an identity its campaign's `stir` policy would refuse
    /// (`on_fail = "flag"`).
    StirFlagged => "stir_flagged",
    /// A SIP INFO digit (`application/dtmf-relay`, `application/dtmf`) DCE played to the
    /// other leg as RFC 4733 telephone-events instead of relaying the INFO.
    DtmfInfoConverted => "dtmf_info_converted",
    /// A campaign's duplicate rule (`action = "reject"`): 603.
    Duplicate603 => "rejected_603_duplicate",
    /// Calls a buyer answered.
    CallAnswered => "calls_answered",
    /// Answered calls that ended.
    CallCompleted => "calls_completed",
    /// A buyer hung up within the campaign's reroute time: the carrier stayed connected and
    /// the call went on to the next buyer.
    CallRerouted => "calls_rerouted",
    /// A rerouted call that no other buyer took (the carrier got BYE).
    RerouteFailed => "reroutes_failed",
    /// Calls the carrier cancelled while ringing.
    CallCancelled => "calls_cancelled",
    /// Malformed request with no usable Via: dropped.
    DroppedUnaddressable => "dropped_unaddressable_request",
    /// Malformed response: dropped.
    DroppedMalformedResponse => "dropped_malformed_response",
    /// Response matching no transaction: dropped.
    DroppedStrayResponse => "dropped_stray_response",
    /// ACK matching no transaction or dialog: dropped.
    DroppedStrayAck => "dropped_stray_ack",
    /// Message over the size limit: dropped (UDP) or connection closed (TCP).
    DroppedOversize => "dropped_oversize",
    /// Bytes that are not a SIP message at all: dropped.
    DroppedGarbage => "dropped_unparseable",
    /// TCP connection closed because its stream could not be framed.
    TcpClosedFraming => "tcp_closed_framing",
    /// TCP connection closed for idleness.
    TcpClosedIdle => "tcp_closed_idle",
    /// TCP connection refused by the per-IP or global limit.
    TcpRefusedLimit => "tcp_refused_limit",
    /// A message for a TCP connection that is gone or backed up: dropped.
    TcpSendFailed => "tcp_send_failed",
    /// DCE opened a TCP connection to a buyer trunk.
    TcpConnected => "tcp_buyer_connected",
    /// A TCP connection to a buyer trunk could not be opened.
    TcpConnectFailed => "tcp_buyer_connect_failed",
    /// A TLS handshake failed (from a carrier, or with a buyer: certificate, protocol, time).
    TlsHandshakeFailed => "tls_handshake_failed",
    /// A UDP send failed.
    UdpSendFailed => "udp_send_failed",
    /// ACK to a stateless non-2xx answer of the edge: absorbed.
    AckToStateless => "absorbed_ack_stateless",
    /// Message from a source over its per-source rate: dropped before the core queue.
    DroppedSourceRate => "dropped_source_rate",
    /// Message dropped because the core queue was full.
    DroppedQueueFull => "dropped_queue_full",
    /// Datagram a SIP worker read and handed to the worker that owns it (decision 0010).
    HandedOn => "handed_to_owner_worker",
    /// New INVITE shed at the receive side while the core is behind: stateless 503.
    Shed503 => "rejected_503_shed",
    /// TCP connection closed because a message did not arrive whole in time.
    TcpClosedMessageTimeout => "tcp_closed_message_timeout",
}

/// The counters, shared by every task.
#[derive(Debug)]
pub struct Counters {
    values: Vec<AtomicU64>,
    /// Labelled figures (outcomes, rules, SIP by method and code, auction latency, RTP).
    pub m: crate::metrics::Metrics,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            values: Counter::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            m: crate::metrics::Metrics::default(),
        }
    }
}

impl Counters {
    /// Add one.
    pub fn inc(&self, c: Counter) {
        self.values[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self, c: Counter) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    /// Every non-zero counter as `name=value`, space separated.
    pub fn report(&self) -> String {
        Counter::ALL
            .iter()
            .filter(|c| self.get(**c) > 0)
            .map(|c| format!("{}={}", c.name(), self.get(*c)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_reports() {
        let c = Counters::default();
        c.inc(Counter::Malformed400);
        c.inc(Counter::Malformed400);
        c.inc(Counter::Options200);
        assert_eq!(c.get(Counter::Malformed400), 2);
        assert_eq!(
            c.report(),
            "answered_200_options=1 rejected_400_malformed=2"
        );
    }
}
