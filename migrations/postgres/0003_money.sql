-- Money (issue #14): what the buyer pays (revenue), what the publisher is paid (payout) and
-- what the exchange keeps (margin), in cents. Before this step `payout_cents` held what the
-- buyer paid and there was no publisher margin, so old rows get revenue = that figure, the
-- same payout and no margin.
ALTER TABLE calls ADD COLUMN revenue_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN margin_cents BIGINT NOT NULL DEFAULT 0;
UPDATE calls SET revenue_cents = payout_cents;
