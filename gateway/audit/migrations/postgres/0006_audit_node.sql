-- The hashes of the tree's complete perfect subtrees at every 8th level (256 leaves, 65,536,
-- …), written with the entries that complete them: the sequencer keeps only the recent part of
-- the tree in memory and reads older proof hashes from here (issue 22, flat memory). Derived
-- from the leaf hashes (a log written before fills it at its next start); append-only.
CREATE TABLE audit_node (
    level INTEGER NOT NULL,
    idx BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TRIGGER audit_node_append_only BEFORE UPDATE OR DELETE ON audit_node FOR EACH ROW EXECUTE FUNCTION audit_append_only();
