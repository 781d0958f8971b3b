-- Conversions (issue #15): a buyer (or an admin) marks an answered call converted, or adjusts
-- what its publisher is paid, within 30 days of the INVITE (POST /v1/calls/{id}/conversion).
-- `calls` keeps the state after the latest event (payout_cents and margin_cents hold the
-- adjusted figures); `conversions` keeps every event with who, when, the payout before and
-- after, and the note. Written in one transaction with the call.converted postbacks.
ALTER TABLE calls ADD COLUMN converted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN converted_at TEXT;             -- the latest conversion event
ALTER TABLE calls ADD COLUMN converted_by TEXT;             -- its API key's name
ALTER TABLE calls ADD COLUMN conversion_seq INTEGER NOT NULL DEFAULT 0; -- events so far

CREATE TABLE IF NOT EXISTS conversions (
    call_id          TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq              INTEGER NOT NULL,
    event_at         TEXT NOT NULL,
    by_key           TEXT NOT NULL,
    converted        INTEGER NOT NULL,
    old_payout_cents INTEGER NOT NULL,
    new_payout_cents INTEGER NOT NULL,
    note             TEXT,
    PRIMARY KEY (call_id, seq)
);
