-- DTMF (issue #17): the RFC 4733 digits each side sent, in order, with how long each was
-- held: {"from_carrier": [{"digit": "1", "duration_ms": 100}, ...], "from_buyer": [...]};
-- NULL when neither side sent a digit.
ALTER TABLE calls ADD COLUMN dtmf TEXT;
