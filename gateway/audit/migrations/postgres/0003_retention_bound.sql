-- Retention bound by the store itself: the retention limit is stored once and may only
-- grow (a shorter one would make months due early), and a period's key may be destroyed
-- only once the period ended `retention_days` before the destruction's time.
-- `cii audit verify` also checks each destroyed period against the RETENTION_RUN entries.
CREATE TABLE audit_retention (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    retention_days BIGINT NOT NULL CHECK (retention_days >= 365)
);
CREATE FUNCTION audit_retention_only_grows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.retention_days < OLD.retention_days THEN
        RAISE EXCEPTION 'the audit retention limit can only grow';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_retention_only_grows BEFORE UPDATE OR DELETE ON audit_retention
FOR EACH ROW EXECUTE FUNCTION audit_retention_only_grows();
CREATE FUNCTION audit_body_key_only_when_due() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    days BIGINT := COALESCE((SELECT retention_days FROM audit_retention WHERE id = 1), 365);
    due BIGINT := (EXTRACT(EPOCH FROM (to_date(OLD.period || '-01', 'YYYY-MM-DD') + INTERVAL '1 month'))::BIGINT
                   + days::BIGINT * 86400) * 1000000;
BEGIN
    IF NEW.destroyed_micros < due THEN
        RAISE EXCEPTION 'this period is not due for destruction';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER audit_body_key_only_when_due BEFORE UPDATE ON audit_body_key
FOR EACH ROW EXECUTE FUNCTION audit_body_key_only_when_due();
