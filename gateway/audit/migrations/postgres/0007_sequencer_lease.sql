-- Who sequences the log when several gateway replicas share this database: the holder of the
-- lease row, for a time the database's own clock measures (one clock for every replica). The
-- epoch only grows: each acquisition adds one. Every batch the sequencer appends calls
-- `audit_fence` with its epoch in the same statement as its inserts, so a sequencer that lost
-- the lease (paused past its expiry, cut off, replaced) appends nothing more: the fence holds
-- the row FOR SHARE until the batch commits, and a takeover's UPDATE waits for that commit.
-- A session advisory lock would not do: a paused holder keeps it. The service role reaches
-- the row only through these SECURITY DEFINER functions (deploy/postgres/audit-roles.sql).
CREATE TABLE audit_lease (
    id          SMALLINT    PRIMARY KEY CHECK (id = 1),
    holder      TEXT        NOT NULL,
    epoch       BIGINT      NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO audit_lease (id, holder, epoch, expires_at) VALUES (1, '', 0, '-infinity');

-- The lease for `who` for `seconds` if nobody holds it (or its holder's time ran out): the
-- new epoch, or NULL.
CREATE FUNCTION audit_lease_acquire(who TEXT, seconds DOUBLE PRECISION) RETURNS BIGINT
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE public.audit_lease
    SET holder = who, epoch = epoch + 1, expires_at = clock_timestamp() + make_interval(secs => seconds)
    WHERE id = 1 AND expires_at <= clock_timestamp()
    RETURNING epoch;
$$;

-- Prolongs the lease `who` holds at epoch `held`; false if it is no longer theirs.
CREATE FUNCTION audit_lease_renew(who TEXT, held BIGINT, seconds DOUBLE PRECISION) RETURNS BOOLEAN
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH renewed AS (
        UPDATE public.audit_lease SET expires_at = clock_timestamp() + make_interval(secs => seconds)
        WHERE id = 1 AND holder = who AND epoch = held AND expires_at > clock_timestamp()
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM renewed);
$$;

-- Gives the lease up at once (a clean stop: the next replica need not wait for the expiry).
CREATE FUNCTION audit_lease_release(who TEXT, held BIGINT) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE public.audit_lease SET expires_at = '-infinity'
    WHERE id = 1 AND holder = who AND epoch = held;
$$;

-- Raises CIIL1 unless the lease of epoch `held` is held now; keeps the row locked FOR SHARE
-- until the calling statement's transaction ends.
CREATE FUNCTION audit_fence(held BIGINT) RETURNS BIGINT
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM 1 FROM public.audit_lease WHERE id = 1 AND epoch = held AND expires_at > clock_timestamp() FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the audit sequencer lease of epoch % is not held', held USING ERRCODE = 'CIIL1';
    END IF;
    RETURN held;
END;
$$;

REVOKE ALL ON FUNCTION audit_lease_acquire(TEXT, DOUBLE PRECISION) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_lease_renew(TEXT, BIGINT, DOUBLE PRECISION) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_lease_release(TEXT, BIGINT) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_fence(BIGINT) FROM PUBLIC;
