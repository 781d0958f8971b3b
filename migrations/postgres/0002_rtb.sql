-- Real-time bidding (issue #14): every bid request of a call, in the order the answers came.
CREATE TABLE IF NOT EXISTS pings (
    call_id      UUID NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    position     INTEGER NOT NULL,
    buyer_id     TEXT NOT NULL,
    latency_ms   INTEGER NOT NULL,
    status       INTEGER,
    outcome      TEXT NOT NULL,
    amount_cents INTEGER,
    PRIMARY KEY (call_id, position)
);
CREATE INDEX IF NOT EXISTS pings_by_buyer ON pings (buyer_id, outcome);
