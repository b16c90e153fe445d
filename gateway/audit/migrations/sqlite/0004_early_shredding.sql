-- Exceptional early shredding (issue 20): a month whose key is destroyed before it is due,
-- after a request and an approval by two roles, both logged (SHREDDING_REQUESTED and
-- SHREDDING_APPROVED). The row names the approval's entry; `cii audit verify` checks the log
-- for it, so a row written straight into the store without them fails verification.
CREATE TABLE audit_early_shredding (
    period         TEXT PRIMARY KEY,
    approval_index INTEGER NOT NULL,
    at_micros      INTEGER NOT NULL
) STRICT;
CREATE TRIGGER audit_early_shredding_no_update BEFORE UPDATE ON audit_early_shredding
BEGIN SELECT RAISE(ABORT, 'early shreddings are history'); END;
CREATE TRIGGER audit_early_shredding_no_delete BEFORE DELETE ON audit_early_shredding
BEGIN SELECT RAISE(ABORT, 'early shreddings are history'); END;
DROP TRIGGER audit_body_key_only_when_due;
CREATE TRIGGER audit_body_key_only_when_due BEFORE UPDATE ON audit_body_key
WHEN NEW.destroyed_micros < (
    CAST(strftime('%s', OLD.period || '-01', '+1 month') AS INTEGER)
    + COALESCE((SELECT retention_days FROM audit_retention WHERE id = 1), 365) * 86400
) * 1000000
AND NOT EXISTS (SELECT 1 FROM audit_early_shredding e WHERE e.period = OLD.period)
BEGIN SELECT RAISE(ABORT, 'this period is not due for destruction'); END;
