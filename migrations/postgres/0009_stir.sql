-- STIR/SHAKEN (issue #16): the call's caller-identity verdict — `A`, `B`, `C` (verified, with
-- the attestation), `no_identity`, `failed:<reason>`; NULL when [stir] is not configured.
ALTER TABLE calls ADD COLUMN stir TEXT;
