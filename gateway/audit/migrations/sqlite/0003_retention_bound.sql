-- Retention bound by the store itself: the retention limit is stored once and may only
-- grow (a shorter one would make months due early), and a period's key may be destroyed
-- only once the period ended `retention_days` before the destruction's time.
-- `cii audit verify` also checks each destroyed period against the RETENTION_RUN entries.
CREATE TABLE audit_retention (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    retention_days INTEGER NOT NULL CHECK (retention_days >= 365)
);
CREATE TRIGGER audit_retention_only_grows BEFORE UPDATE ON audit_retention
WHEN NEW.retention_days < OLD.retention_days
BEGIN SELECT RAISE(ABORT, 'the audit retention limit can only grow'); END;
CREATE TRIGGER audit_retention_no_delete BEFORE DELETE ON audit_retention
BEGIN SELECT RAISE(ABORT, 'the audit retention limit is never deleted'); END;
CREATE TRIGGER audit_body_key_only_when_due BEFORE UPDATE ON audit_body_key
WHEN NEW.destroyed_micros < (
    CAST(strftime('%s', OLD.period || '-01', '+1 month') AS INTEGER)
    + COALESCE((SELECT retention_days FROM audit_retention WHERE id = 1), 365) * 86400
) * 1000000
BEGIN SELECT RAISE(ABORT, 'this period is not due for destruction'); END;
