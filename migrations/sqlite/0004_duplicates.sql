-- Duplicate-call rules (issue #15): the rules that fired on a call, as
-- `campaign:<action>` / `buyer:<id>:<action>` joined by commas; NULL when none did.
ALTER TABLE calls ADD COLUMN duplicate TEXT;
