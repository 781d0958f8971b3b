-- Revenue recovery (issue #15): every buyer leg that answered, billed on its own, as a JSON
-- array of {buyer_id, bid_cents, answer_at, end_at, duration_s, billable, revenue_cents,
-- payout_cents, hangup_by, rerouted}; the call's revenue and payout are their sums. NULL when
-- no buyer answered.
ALTER TABLE calls ADD COLUMN IF NOT EXISTS legs JSONB;
