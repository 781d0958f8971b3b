-- The same schema for the embedded SQLite default (UUIDs and times as text, JSON as text).
CREATE TABLE IF NOT EXISTS calls (
    id              TEXT PRIMARY KEY,
    node_id         TEXT NOT NULL,
    carrier         TEXT NOT NULL,
    campaign        TEXT NOT NULL,
    caller          TEXT NOT NULL,
    called          TEXT NOT NULL,
    carrier_call_id TEXT NOT NULL,
    buyer_id        TEXT,
    bid_cents       INTEGER NOT NULL,
    payout_cents    INTEGER NOT NULL,
    billable        INTEGER NOT NULL,
    disposition     TEXT NOT NULL,
    status          TEXT NOT NULL,
    carrier_code    INTEGER NOT NULL,
    buyer_code      INTEGER,
    compliance      TEXT NOT NULL,
    hangup_by       TEXT,
    reason          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    answered_at     TEXT,
    ended_at        TEXT NOT NULL,
    duration_ms     INTEGER NOT NULL,
    quality         TEXT
);
CREATE INDEX IF NOT EXISTS calls_recent_by_status ON calls (created_at DESC, status);
CREATE INDEX IF NOT EXISTS calls_by_buyer ON calls (buyer_id, status, created_at DESC);
CREATE INDEX IF NOT EXISTS calls_by_campaign ON calls (campaign, created_at DESC);
CREATE INDEX IF NOT EXISTS calls_by_caller ON calls (caller, created_at DESC);

CREATE TABLE IF NOT EXISTS bids (
    call_id      TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    buyer_id     TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    PRIMARY KEY (call_id, position)
);
CREATE INDEX IF NOT EXISTS bids_by_buyer ON bids (buyer_id, outcome);

CREATE TABLE IF NOT EXISTS internal_dnc (
    number   TEXT PRIMARY KEY,
    added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    source   TEXT
);
CREATE TABLE IF NOT EXISTS consent (
    number     TEXT NOT NULL,
    campaign   TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    expires_at TEXT,
    source     TEXT NOT NULL,
    PRIMARY KEY (number, campaign)
);
