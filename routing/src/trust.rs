//! Trust in a call's caller identity (STIR/SHAKEN, issue #16): the levels, a campaign's
//! requirement, and what a buyer's `min_attestation` and `attestation_bid` do in the auction.

/// How well a call's caller is established: `None` (no verified identity: none carried, or it
/// did not verify) below the SHAKEN attestations `C` < `B` < `A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Trust {
    /// Not verified.
    #[default]
    None,
    /// Gateway attestation.
    C,
    /// Partial attestation.
    B,
    /// Full attestation.
    A,
}

impl Trust {
    /// `none`, `C`, `B`, `A`.
    pub fn as_str(self) -> &'static str {
        match self {
            Trust::None => "none",
            Trust::C => "C",
            Trust::B => "B",
            Trust::A => "A",
        }
    }

    /// `A`, `B` or `C`.
    pub fn parse_level(s: &str) -> Option<Trust> {
        match s {
            "A" => Some(Trust::A),
            "B" => Some(Trust::B),
            "C" => Some(Trust::C),
            _ => None,
        }
    }

    /// Index into [`AttestationBid`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A campaign's `stir.require`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Require {
    /// Verify and record, require nothing (the default).
    #[default]
    Nothing,
    /// An identity that verifies, at any attestation.
    Any,
    /// A verified identity at this attestation or better.
    AtLeast(Trust),
}

/// A campaign's `stir = { require, on_fail }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StirPolicy {
    /// What a call must show.
    pub require: Require,
    /// A call that does not show it is refused (`on_fail = "reject"`, the default) or goes on
    /// flagged (`"flag"`: recorded, and the buyer INVITE carries a `Reason`).
    pub flag: bool,
}

/// A buyer's bid multipliers by trust level (`attestation_bid = { B = 0.8, C = 0.5 }`), in
/// millionths, indexed by [`Trust::index`]; 1,000,000 = the bid unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestationBid(pub [u32; 4]);

impl Default for AttestationBid {
    fn default() -> Self {
        AttestationBid([1_000_000; 4])
    }
}

impl AttestationBid {
    /// `bid_cents` at trust `t` (rounded down).
    pub fn price(&self, t: Trust, bid_cents: u32) -> u32 {
        let m = u64::from(self.0[t.index()]);
        (u64::from(bid_cents) * m / 1_000_000).min(u64::from(u32::MAX)) as u32
    }

    /// Every level at 1.
    pub fn is_flat(&self) -> bool {
        self.0.iter().all(|&m| m == 1_000_000)
    }
}

/// Which entries' prices [`crate::apply_trust`] moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prices {
    /// Static bids (the real-time bids are not in yet).
    Static,
    /// Real-time bids (just in; the static ones were moved already).
    Rtb,
    /// All (the verdict came after the bids).
    All,
    /// None (a reserved price stays as promised).
    Keep,
}
