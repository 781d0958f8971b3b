-- Recording (issue #17): {"path": "recordings/2026-12-04/<id>.wav", "duration_s": 61.2} for a
-- recorded call, {"duration_s": 0, "skipped": "all_party_consent:CA"} for one that was not;
-- NULL when nobody asked for a recording. Erasure and retention delete the file and the path.
ALTER TABLE calls ADD COLUMN recording JSONB;
