-- The format of each version's `body`: 1 is the JSON release 0.1 wrote. A new format is a
-- new number with its own decoder; rows already written keep theirs. Adding a column with a
-- default is not an UPDATE: the append-only triggers are not involved, and no row changes.
ALTER TABLE consent_version ADD COLUMN body_version BIGINT NOT NULL DEFAULT 1;
