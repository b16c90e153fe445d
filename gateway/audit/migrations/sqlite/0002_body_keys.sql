-- Retention by crypto-shredding (src/body.rs): each entry body is sealed under
-- the key of its period (the UTC month of its time); retention destroys a
-- period's key, never an entry. Rows written before this migration have no
-- period and a plaintext body.
ALTER TABLE audit_entry ADD COLUMN period TEXT;
CREATE TABLE audit_body_key (
    period TEXT PRIMARY KEY,
    -- AES-256-GCM key; NULL once retention destroyed it.
    key BLOB,
    destroyed_micros INTEGER
);
-- A key is created once and may only be destroyed: never replaced, never deleted
-- (a missing row is a damaged log, a NULL key an expired period).
CREATE TRIGGER audit_body_key_destroy_only BEFORE UPDATE ON audit_body_key
WHEN NEW.period IS NOT OLD.period OR NEW.key IS NOT NULL OR OLD.key IS NULL OR NEW.destroyed_micros IS NULL
BEGIN SELECT RAISE(ABORT, 'an audit body key can only be destroyed'); END;
CREATE TRIGGER audit_body_key_no_delete BEFORE DELETE ON audit_body_key BEGIN SELECT RAISE(ABORT, 'audit body keys are never deleted'); END;
CREATE INDEX audit_entry_period ON audit_entry (period);
