-- The evidence of a rewrite is kept: each alarm stores the checkpoint the node held and the
-- one that contradicted it (both signed by the log's key: together they prove the split),
-- and each clearing of the alarm is recorded with the operator's reason. Both tables are
-- append-only; clearing the alarm deletes neither.
CREATE TABLE witness_evidence (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    seen_micros      INTEGER NOT NULL,
    held_note        TEXT    NOT NULL,
    conflicting_note TEXT    NOT NULL,
    problem          TEXT    NOT NULL
) STRICT;
CREATE TABLE witness_clearance (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    cleared_micros INTEGER NOT NULL,
    held_size     INTEGER NOT NULL,
    reason        TEXT    NOT NULL
) STRICT;
CREATE TRIGGER witness_evidence_kept BEFORE UPDATE ON witness_evidence
BEGIN SELECT RAISE(ABORT, 'witness evidence is kept as written'); END;
CREATE TRIGGER witness_evidence_not_deleted BEFORE DELETE ON witness_evidence
BEGIN SELECT RAISE(ABORT, 'witness evidence is never deleted'); END;
CREATE TRIGGER witness_clearance_kept BEFORE UPDATE ON witness_clearance
BEGIN SELECT RAISE(ABORT, 'witness clearances are kept as written'); END;
CREATE TRIGGER witness_clearance_not_deleted BEFORE DELETE ON witness_clearance
BEGIN SELECT RAISE(ABORT, 'witness clearances are never deleted'); END;
