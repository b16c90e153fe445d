-- Consents (every version kept), the reference directory, and the change feed.
-- Persons appear only as registry-domain pseudonyms (32 bytes).
CREATE TABLE consent_version (
    consent_id TEXT NOT NULL,
    version INTEGER NOT NULL CHECK (version >= 1),
    person BLOB NOT NULL CHECK (length(person) = 32),
    revoked INTEGER NOT NULL CHECK (revoked IN (0, 1)),
    valid_until_micros INTEGER NOT NULL,
    recorded_at_micros INTEGER NOT NULL,
    -- The rest of the declaration (scope, evidence, information, revocation), as JSON.
    body TEXT NOT NULL,
    PRIMARY KEY (consent_id, version)
) STRICT;
CREATE INDEX consent_version_person ON consent_version (person);
CREATE INDEX consent_version_until ON consent_version (valid_until_micros);
-- Versions are history: never changed, never removed.
CREATE TRIGGER consent_version_no_update BEFORE UPDATE ON consent_version
BEGIN SELECT RAISE(ABORT, 'consent versions are append-only'); END;
CREATE TRIGGER consent_version_no_delete BEFORE DELETE ON consent_version
BEGIN SELECT RAISE(ABORT, 'consent versions are append-only'); END;

CREATE TABLE relationship (
    id INTEGER PRIMARY KEY,
    person BLOB NOT NULL CHECK (length(person) = 32),
    institution TEXT NOT NULL,
    capacity TEXT NOT NULL,
    since_micros INTEGER NOT NULL,
    until_micros INTEGER,
    declared_by_user TEXT NOT NULL,
    ended_by_user TEXT
) STRICT;
CREATE INDEX relationship_person ON relationship (person, institution);
-- At most one open relationship per person, institution and capacity.
CREATE UNIQUE INDEX relationship_open ON relationship (person, institution, capacity) WHERE until_micros IS NULL;

CREATE TABLE consent_change (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    consent_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('revoked', 'expired')),
    at_micros INTEGER NOT NULL,
    institutions TEXT NOT NULL,
    UNIQUE (consent_id, kind)
) STRICT;
