-- The hashes of the tree's complete perfect subtrees at every 8th level (256 leaves, 65,536,
-- …), written with the entries that complete them: the sequencer keeps only the recent part of
-- the tree in memory and reads older proof hashes from here (issue 22, flat memory). Derived
-- from the leaf hashes (a log written before fills it at its next start); append-only.
CREATE TABLE audit_node (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TRIGGER audit_node_no_update BEFORE UPDATE ON audit_node BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_node_no_delete BEFORE DELETE ON audit_node BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
