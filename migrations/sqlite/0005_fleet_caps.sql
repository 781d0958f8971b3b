-- Fleet-wide buyer caps (issue #15): when Redis could not say whether a buyer's caps
-- allowed an attempt, what on_cap_error decided (`lookup_failed:local` or
-- `lookup_failed:skip_buyer`); NULL otherwise.
ALTER TABLE calls ADD COLUMN fleet_caps TEXT;
