//! Recording a connected call (issue #17 item 1, decision 0020): when its campaign or the
//! buyer that answered says `record = true`, the relay records both directions from the
//! answer on, into `[media] recordings_dir/<UTC day>/<call id>.wav`. In the US states where
//! every party must consent to a recording (by the caller's area code), the call is not
//! recorded and its CDR says why: DCE cannot yet play the announcement that would ask.

use super::controller::Controller;
use super::state::CallKey;
use dce_routing::BuyerId;

/// The states whose wiretap laws need every party's consent to record a call.
pub(super) const ALL_PARTY_CONSENT: [&str; 14] = [
    "CA", "CT", "DE", "FL", "IL", "MD", "MA", "MI", "MT", "NV", "NH", "OR", "PA", "WA",
];

impl Controller {
    /// The call was answered by `buyer`: record it if its campaign or that buyer says so.
    pub(super) fn start_recording(&mut self, key: CallKey, buyer: BuyerId) {
        let day = self.clock.now_utc().format("%Y-%m-%d").to_string();
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        let snap = &call.snapshot;
        if !(snap.campaign(call.campaign).record || snap.buyer(buyer).record) {
            return;
        }
        let Some(id) = call.media else {
            return; // media not anchored: nothing crosses DCE to record
        };
        if let Some(st) = dce_routing::state_of_number(&call.caller)
            .map(|s| s.code())
            .filter(|s| ALL_PARTY_CONSENT.contains(s))
        {
            tracing::info!(call = %call.id, state = st, "not recorded: the caller's state needs every party's consent");
            call.recording_skipped = Some(format!("all_party_consent:{st}"));
            return;
        }
        let path = self
            .settings
            .recordings_dir
            .join(day)
            .join(format!("{}.wav", call.id));
        tracing::debug!(call = %call.id, path = %path.display(), "recording");
        self.media.record(id, path);
    }
}
