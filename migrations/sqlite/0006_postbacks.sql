-- Postbacks (issue #15): the outbox of webhook deliveries, written in the same transaction as
-- the call's CDR and worked off by the sender. Times are Unix milliseconds. The webhook's
-- secret is never stored: the sender signs with the running config's.
CREATE TABLE IF NOT EXISTS postbacks (
    id           TEXT PRIMARY KEY,            -- <call id>:<event>:<target>, the Idempotency-Key
    call_id      TEXT NOT NULL,
    target       TEXT NOT NULL,               -- buyer:<id> or carrier:<id>
    event        TEXT NOT NULL,
    url          TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_ms   BIGINT NOT NULL,
    next_ms      BIGINT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL DEFAULT 'pending', -- pending, delivered, failed
    last_error   TEXT,
    delivered_ms BIGINT
);
CREATE INDEX IF NOT EXISTS postbacks_due ON postbacks (state, next_ms);
