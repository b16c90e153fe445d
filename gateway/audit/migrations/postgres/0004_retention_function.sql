-- Retention through a function, so the gateway's service role needs no UPDATE on the key
-- table (deploy/postgres/audit-roles.sql grants it INSERT and SELECT on the log, and EXECUTE
-- on this): SECURITY DEFINER runs it with its owner's rights, and the key table's triggers
-- still refuse anything but destroying a key that is due.
CREATE FUNCTION audit_destroy_keys(periods TEXT[], at_micros BIGINT) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE public.audit_body_key SET key = NULL, destroyed_micros = at_micros
    WHERE period = ANY(periods) AND key IS NOT NULL;
$$;
REVOKE ALL ON FUNCTION audit_destroy_keys(TEXT[], BIGINT) FROM PUBLIC;
