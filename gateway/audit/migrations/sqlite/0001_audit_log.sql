-- The audit log: entries (leaves of the Merkle tree) and signed checkpoints.
-- Append-only: updates and deletes are refused by triggers (the verifier
-- catches any change made behind them).
CREATE TABLE audit_entry (
    idx INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    entry BLOB NOT NULL
);
CREATE TABLE audit_checkpoint (
    tree_size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_entry BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
