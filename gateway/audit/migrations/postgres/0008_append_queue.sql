-- Appends of several gateway replicas (issue 23): every replica's append waits here until the
-- holder of the sequencer's lease integrates it. The sequencer marks each row with the index
-- it got, and empties its bytes, in the same fenced statement as the batch (so a row is
-- integrated once, with its batch or not at all). An entry queued twice, byte for byte (a held
-- transfer completed by its sender's retry and by the sweep at once), is one row: one entry.
-- The bytes wait here in the clear as they wait in the gateway's held records; integrated
-- rows keep only the digest and the index, and are deleted a day after their integration.
-- Each row is signed by the replica that queued it, with the log's key (a note over the
-- digest): the sequencer integrates no row a database writer without the key put there, so
-- the queue is no signing oracle for the service role.
CREATE TABLE audit_queue (
    id             BIGSERIAL   PRIMARY KEY,
    entry_sha256   BYTEA       NOT NULL UNIQUE,
    entry          BYTEA       NOT NULL,
    signed         TEXT        NOT NULL,
    queued_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    idx            BIGINT      UNIQUE,
    integrated_at  TIMESTAMPTZ
);
CREATE INDEX audit_queue_waiting ON audit_queue (id) WHERE idx IS NULL;

-- Raises CIIL2 unless a batch marked every queued row it integrates (none was integrated
-- before): the batch is then not appended at all.
CREATE FUNCTION audit_dequeued(marked BIGINT, wanted BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    IF marked <> wanted THEN
        RAISE EXCEPTION 'queued audit entries already integrated (% of % marked)', marked, wanted USING ERRCODE = 'CIIL2';
    END IF;
    RETURN TRUE;
END;
$$;

-- The newest checkpoint a quorum of witnesses cosigned, published by the sequencing replica for
-- the others (which check its quorum before they hand out receipts on it): one row, only ever
-- replaced by a larger tree. Witnesses are asked by the sequencing replica alone.
CREATE TABLE audit_cosigned (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    tree_size  BIGINT   NOT NULL,
    note       TEXT     NOT NULL
);

-- Raises CIIL3 unless a batch starts where the stored log ends (`stored`: the newest
-- checkpoint's size): a database rolled back under a live sequencer (an asynchronous failover,
-- a restore to an earlier point) gets no signed gap.
CREATE FUNCTION audit_extends(stored BIGINT, start BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    IF stored <> start THEN
        RAISE EXCEPTION 'the batch starts at % but the log ends at %', start, stored USING ERRCODE = 'CIIL3';
    END IF;
    RETURN TRUE;
END;
$$;
