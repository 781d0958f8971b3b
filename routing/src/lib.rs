//! # dce-routing — buyers, targeting, caps, the auction, ring-tree order
//!
//! Pure functions over an immutable [`Snapshot`] of campaigns and buyers plus live per-buyer
//! counters ([`Live`]). No I/O and no clock: the time of the call is an argument.
//!
//! ## Layout
//!
//! | file | what it owns |
//! |---|---|
//! | `number.rs` | dialled/caller numbers to E.164 digits |
//! | `geo.rs` | US states, the NANP area code → state table (`data/npa_state.tsv`) |
//! | `schedule.rs` | a buyer's opening hours in its time zone |
//! | `model.rs` | [`Campaign`], [`Buyer`], [`Snapshot`] and its checks |
//! | `live.rs` | [`Live`]: concurrency slots, hourly/daily/monthly answered counts and spend, pauses (an operator's, or after calls rang out) |
//! | `trust.rs` | STIR/SHAKEN trust levels, a campaign's `stir` policy, a buyer's attestation multipliers |
//! | `auction.rs` | [`auction`]: eligibility filters, ranking, an explanation per buyer |

mod auction;
mod geo;
mod live;
mod model;
mod number;
mod schedule;
mod trust;

pub use auction::{
    apply_trust, auction, local_keys, pin_first, rank, reorder, Entry, Exclusion, Outcome,
};
pub use geo::{state_of_number, State, StateSet};
pub use live::{BuyerLive, Health, Keys, Live, Pause, PauseBy};
pub use model::{
    Buyer, BuyerAuth, BuyerHealth, BuyerId, Campaign, CampaignId, DupAction, DupStage,
    DuplicateRule, PauseRule, Rtb, RtbFormat, Snapshot, SnapshotError,
};
pub use number::normalize;
pub use schedule::{Days, Schedule, ScheduleError};
pub use trust::{AttestationBid, Prices, Require, StirPolicy, Trust};
