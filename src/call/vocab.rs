//! The call path's vocabulary as types: bid outcomes, dispositions, who hung up, why a call
//! ended, compliance verdicts. Strings exist only where a CDR, JSON or a database column needs
//! them (`as_str` / `Display` below are that boundary).

use dce_routing::Exclusion;
use std::fmt;

/// How one attempt on a buyer ended without winning the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The buyer answered this final non-2xx code.
    Code(u16),
    /// The INVITE transaction timed out (Timer B).
    Timeout,
    /// The buyer did not answer within `ring_timeout_s`.
    RingTimeout,
    /// The carrier cancelled (or hung up) while this buyer rang.
    Cancelled,
    /// The buyer's URI template gave no usable target.
    BadUri,
    /// The transaction layer refused the INVITE.
    SendFailed,
    /// The buyer answered with SDP DCE cannot anchor.
    BadSdp,
    /// The INVITE would exceed what may go over UDP (RFC 3261 §18.1.1).
    TooLarge,
}

/// A buyer's outcome in one call (the CDR's `bids[].outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BidOutcome {
    /// It answered and got the call.
    Won,
    /// Eligible but never tried.
    Lost,
    /// Filtered out by the auction, or its concurrency slot was gone when its turn came.
    Excluded(Exclusion),
    /// Tried; how the attempt ended.
    Attempted(AttemptEnd),
}

impl fmt::Display for BidOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BidOutcome::Won => f.write_str("won"),
            BidOutcome::Lost => f.write_str("lost"),
            BidOutcome::Excluded(x) => write!(f, "excluded:{}", x.as_str()),
            BidOutcome::Attempted(a) => match a {
                AttemptEnd::Code(c) => write!(f, "attempted:{c}"),
                AttemptEnd::Timeout => f.write_str("attempted:timeout"),
                AttemptEnd::RingTimeout => f.write_str("attempted:ring_timeout"),
                AttemptEnd::Cancelled => f.write_str("attempted:cancelled"),
                AttemptEnd::BadUri => f.write_str("attempted:bad_uri"),
                AttemptEnd::SendFailed => f.write_str("attempted:send_failed"),
                AttemptEnd::BadSdp => f.write_str("attempted:bad_sdp"),
                AttemptEnd::TooLarge => f.write_str("attempted:too_large"),
            },
        }
    }
}

impl BidOutcome {
    /// The SIP code a tried buyer answered, for the API's leg view.
    pub fn code(self) -> Option<u16> {
        match self {
            BidOutcome::Attempted(AttemptEnd::Code(c)) => Some(c),
            _ => None,
        }
    }
}

/// How a call ended, as the CDR's `disposition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A buyer answered.
    Answered,
    /// Refused before any buyer was rung.
    Rejected,
    /// The carrier gave up while buyers rang.
    Cancelled,
    /// Buyers were tried and none answered.
    Failed,
}

impl Disposition {
    /// The CDR column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "answered",
            Disposition::Rejected => "rejected",
            Disposition::Cancelled => "cancelled",
            Disposition::Failed => "failed",
        }
    }
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupBy {
    /// The carrier (BYE or CANCEL).
    Carrier,
    /// The winning buyer (BYE).
    Buyer,
    /// DCE (timers, shutdown, the API).
    Dce,
}

impl HangupBy {
    /// The CDR column value.
    pub fn as_str(self) -> &'static str {
        match self {
            HangupBy::Carrier => "carrier",
            HangupBy::Buyer => "buyer",
            HangupBy::Dce => "dce",
        }
    }
}

/// Why a call was refused or ended (the CDR's `reason`, in words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// DCE is at `max_calls`.
    Overloaded,
    /// DCE is draining.
    ShuttingDown,
    /// The source is no configured carrier.
    UnknownSource,
    /// The carrier is over its `max_cps`.
    CarrierOverCps,
    /// No campaign has the dialled number.
    NoCampaign,
    /// A compliance rule refused the call.
    Compliance,
    /// A campaign's duplicate rule refused the repeat caller.
    Duplicate,
    /// The campaign's `stir` policy refused the caller's identity (the verdict).
    Stir(String),
    /// A fleet-wide compliance lookup failed under `on_lookup_error = "reject"`.
    LookupFailed,
    /// Every buyer was filtered out.
    NoEligibleBuyer,
    /// Ranked buyers existed but none could be rung.
    NoBuyerTried,
    /// Every attempt failed.
    EveryAttemptFailed,
    /// The carrier cancelled (CANCEL, or BYE on the early dialog) before an answer.
    CancelledByCarrier,
    /// The carrier hung up an answered call.
    CarrierHungUp,
    /// The winning buyer hung up.
    BuyerHungUp,
    /// A buyer hung up soon after answering and no other buyer took the rerouted call.
    RerouteFailed,
    /// Our 2xx was never ACKed (RFC 3261 §13.3.1.4).
    NoAck,
    /// The campaign's `max_duration_s`.
    MaxDuration,
    /// No RTP either way for `rtp_timeout_s`.
    RtpTimeout,
    /// DCE shut down.
    Shutdown,
    /// An operator hung up through the API.
    ApiHangup,
    /// The media of a new call could not be anchored.
    Media(String),
}

impl EndReason {
    /// Ends a call that was still ringing as `cancelled` (rather than `failed`).
    pub fn cancels(&self) -> bool {
        matches!(
            self,
            EndReason::CancelledByCarrier | EndReason::Shutdown | EndReason::ApiHangup
        )
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            EndReason::Overloaded => "overloaded",
            EndReason::ShuttingDown => "shutting down",
            EndReason::UnknownSource => "unknown source",
            EndReason::CarrierOverCps => "carrier over max_cps",
            EndReason::NoCampaign => "no campaign for the dialled number",
            EndReason::Compliance => "compliance",
            EndReason::Duplicate => "duplicate caller",
            EndReason::LookupFailed => "compliance lookup failed",
            EndReason::NoEligibleBuyer => "no eligible buyer",
            EndReason::NoBuyerTried => "no buyer could be tried",
            EndReason::EveryAttemptFailed => "every attempt failed",
            EndReason::CancelledByCarrier => "cancelled by carrier",
            EndReason::CarrierHungUp => "carrier hung up",
            EndReason::BuyerHungUp => "buyer hung up",
            EndReason::RerouteFailed => "buyer hung up; no other buyer took the rerouted call",
            EndReason::NoAck => "no ACK for 2xx",
            EndReason::MaxDuration => "max_duration",
            EndReason::RtpTimeout => "rtp_timeout",
            EndReason::Shutdown => "shutdown",
            EndReason::ApiHangup => "api_hangup",
            EndReason::Media(e) => return write!(f, "media: {e}"),
            EndReason::Stir(v) => return write!(f, "stir: {v}"),
        };
        f.write_str(s)
    }
}

/// Why a compliance check refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBy {
    /// One of the in-memory or fleet-wide rules.
    Rule(dce_compliance::Rule),
    /// The fleet-wide lookup failed and the policy is to refuse.
    LookupError,
}

impl RefusedBy {
    /// `DNC`, `TCPA_HOURS`, `TCPA_FREQUENCY`, `CONSENT`, `LOOKUP_ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedBy::Rule(r) => r.as_str(),
            RefusedBy::LookupError => "LOOKUP_ERROR",
        }
    }
}

/// The compliance verdict of a call (the CDR's `compliance`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ComplianceVerdict {
    /// Not checked yet (a call refused before the checks).
    #[default]
    Unchecked,
    /// Passed these checks; `flagged` when a lookup failed and `allow_and_flag` let it through.
    Pass {
        /// Check names in the order they ran.
        ran: Vec<&'static str>,
        /// A lookup failed and the call went on anyway.
        flagged: bool,
    },
    /// Refused.
    Reject(RefusedBy),
}

impl fmt::Display for ComplianceVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComplianceVerdict::Unchecked => f.write_str("pass"),
            ComplianceVerdict::Pass { ran, flagged } => {
                f.write_str("pass")?;
                if !ran.is_empty() {
                    write!(f, ":{}", ran.join(","))?;
                }
                if *flagged {
                    f.write_str(";flagged:lookup_error")?;
                }
                Ok(())
            }
            ComplianceVerdict::Reject(r) => write!(f, "reject:{}", r.as_str()),
        }
    }
}

impl ComplianceVerdict {
    /// Record that a check ran and passed.
    pub fn ran(&mut self, check: &'static str) {
        match self {
            ComplianceVerdict::Pass { ran, .. } => ran.push(check),
            _ => {
                *self = ComplianceVerdict::Pass {
                    ran: vec![check],
                    flagged: false,
                }
            }
        }
    }

    /// Record that a lookup failed and the call goes on.
    pub fn flag(&mut self) {
        match self {
            ComplianceVerdict::Pass { flagged, .. } => *flagged = true,
            _ => {
                *self = ComplianceVerdict::Pass {
                    ran: Vec::new(),
                    flagged: true,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strings_are_the_cdr_vocabulary() {
        assert_eq!(BidOutcome::Won.to_string(), "won");
        assert_eq!(
            BidOutcome::Excluded(Exclusion::Concurrency).to_string(),
            "excluded:concurrency"
        );
        assert_eq!(
            BidOutcome::Attempted(AttemptEnd::Code(486)).to_string(),
            "attempted:486"
        );
        assert_eq!(
            BidOutcome::Attempted(AttemptEnd::RingTimeout).to_string(),
            "attempted:ring_timeout"
        );
        let mut v = ComplianceVerdict::Pass {
            ran: vec!["dnc", "tcpa_hours"],
            flagged: false,
        };
        assert_eq!(v.to_string(), "pass:dnc,tcpa_hours");
        v.ran("frequency");
        assert_eq!(v.to_string(), "pass:dnc,tcpa_hours,frequency");
        v.flag();
        assert_eq!(
            v.to_string(),
            "pass:dnc,tcpa_hours,frequency;flagged:lookup_error"
        );
        let mut u = ComplianceVerdict::Pass {
            ran: vec![],
            flagged: false,
        };
        assert_eq!(u.to_string(), "pass");
        u.flag();
        assert_eq!(u.to_string(), "pass;flagged:lookup_error");
        assert_eq!(
            ComplianceVerdict::Reject(RefusedBy::LookupError).to_string(),
            "reject:LOOKUP_ERROR"
        );
        assert_eq!(EndReason::Media("x".into()).to_string(), "media: x");
    }
}
