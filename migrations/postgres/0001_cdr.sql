-- Call detail records: one row per call, one row per auction entry. Money in integer cents.
CREATE TABLE IF NOT EXISTS calls (
    id              UUID PRIMARY KEY,
    node_id         TEXT NOT NULL,
    carrier         TEXT NOT NULL,
    campaign        TEXT NOT NULL,
    caller          TEXT NOT NULL,          -- E.164 digits (or as received)
    called          TEXT NOT NULL,
    carrier_call_id TEXT NOT NULL,
    buyer_id        TEXT,                   -- the winner
    bid_cents       BIGINT NOT NULL,
    payout_cents    BIGINT NOT NULL,
    billable        BOOLEAN NOT NULL,
    disposition     TEXT NOT NULL,          -- answered | rejected | cancelled | failed
    status          TEXT NOT NULL,          -- = disposition; indexed for "recent calls by status"
    carrier_code    INTEGER NOT NULL,
    buyer_code      INTEGER,
    compliance      TEXT NOT NULL,
    hangup_by       TEXT,
    reason          TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,   -- INVITE received
    answered_at     TIMESTAMPTZ,
    ended_at        TIMESTAMPTZ NOT NULL,
    duration_ms     BIGINT NOT NULL,
    quality         JSONB
);
CREATE INDEX IF NOT EXISTS calls_recent_by_status ON calls (created_at DESC, status);
CREATE INDEX IF NOT EXISTS calls_by_buyer ON calls (buyer_id, status, created_at DESC);
CREATE INDEX IF NOT EXISTS calls_by_campaign ON calls (campaign, created_at DESC);
CREATE INDEX IF NOT EXISTS calls_by_caller ON calls (caller, created_at DESC);

CREATE TABLE IF NOT EXISTS bids (
    call_id      UUID NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    buyer_id     TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    outcome      TEXT NOT NULL,             -- won | lost | excluded:<reason> | attempted:<code>
    PRIMARY KEY (call_id, position)
);
CREATE INDEX IF NOT EXISTS bids_by_buyer ON bids (buyer_id, outcome);

-- For the compliance checks.
CREATE TABLE IF NOT EXISTS internal_dnc (
    number   TEXT PRIMARY KEY,              -- 10-digit NANP
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    source   TEXT
);
CREATE TABLE IF NOT EXISTS consent (
    number     TEXT NOT NULL,
    campaign   TEXT NOT NULL,
    granted_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ,
    source     TEXT NOT NULL,
    PRIMARY KEY (number, campaign)
);
