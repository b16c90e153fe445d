-- Exceptional early shredding (issue 20): a month whose key is destroyed before it is due,
-- after a request and an approval by two roles, both logged (SHREDDING_REQUESTED and
-- SHREDDING_APPROVED). The row names the approval's entry; `cii audit verify` checks the log
-- for it, so a row written straight into the store without them fails verification.
CREATE TABLE audit_early_shredding (
    period         TEXT PRIMARY KEY,
    approval_index BIGINT NOT NULL,
    at_micros      BIGINT NOT NULL
);
CREATE FUNCTION audit_early_shredding_is_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'early shreddings are history';
END;
$$;
CREATE TRIGGER audit_early_shredding_is_history BEFORE UPDATE OR DELETE ON audit_early_shredding
FOR EACH ROW EXECUTE FUNCTION audit_early_shredding_is_history();
CREATE OR REPLACE FUNCTION audit_body_key_only_when_due() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    days BIGINT := COALESCE((SELECT retention_days FROM audit_retention WHERE id = 1), 365);
    due BIGINT := (EXTRACT(EPOCH FROM (to_date(OLD.period || '-01', 'YYYY-MM-DD') + INTERVAL '1 month'))::BIGINT
                   + days::BIGINT * 86400) * 1000000;
BEGIN
    IF NEW.destroyed_micros < due
       AND NOT EXISTS (SELECT 1 FROM audit_early_shredding e WHERE e.period = OLD.period) THEN
        RAISE EXCEPTION 'this period is not due for destruction';
    END IF;
    RETURN NEW;
END;
$$;
-- The service role shreds early through this function only (deploy/postgres/audit-roles.sql):
-- the row naming the approval and the key's destruction, together.
CREATE FUNCTION audit_shred_early(shred_period TEXT, approval BIGINT, at BIGINT) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    INSERT INTO public.audit_early_shredding (period, approval_index, at_micros) VALUES (shred_period, approval, at);
    UPDATE public.audit_body_key SET key = NULL, destroyed_micros = at WHERE period = shred_period AND key IS NOT NULL;
$$;
REVOKE ALL ON FUNCTION audit_shred_early(TEXT, BIGINT, BIGINT) FROM PUBLIC;
