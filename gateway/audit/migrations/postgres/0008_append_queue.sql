-- Appends of several gateway replicas (issue 23): every replica's append waits here until the
-- holder of the sequencer's lease integrates it. The sequencer marks each row with the index
-- it got, and empties its bytes, in the same fenced statement as the batch (so a row is
-- integrated once, with its batch or not at all). An entry queued twice, byte for byte (a held
-- transfer completed by its sender's retry and by the sweep at once), is one row: one entry.
-- The bytes wait here in the clear as they wait in the gateway's held records; integrated
-- rows keep only the digest and the index, and are deleted a day later.
CREATE TABLE audit_queue (
    id            BIGSERIAL   PRIMARY KEY,
    entry_sha256  BYTEA       NOT NULL UNIQUE,
    entry         BYTEA       NOT NULL,
    queued_at     TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    idx           BIGINT      UNIQUE
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
