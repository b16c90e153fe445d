-- The audit log: entries (leaves of the Merkle tree) and signed checkpoints.
-- Append-only: updates and deletes are refused by triggers (the verifier
-- catches any change made behind them). Production should also grant the
-- gateway's role INSERT and SELECT only.
CREATE TABLE audit_entry (
    idx BIGINT PRIMARY KEY,
    leaf_hash BYTEA NOT NULL,
    entry BYTEA NOT NULL
);
CREATE TABLE audit_checkpoint (
    tree_size BIGINT PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only';
END;
$$;
CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint FOR EACH ROW EXECUTE FUNCTION audit_append_only();
