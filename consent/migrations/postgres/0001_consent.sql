-- Consents (every version kept), the reference directory, and the change feed.
-- Persons appear only as registry-domain pseudonyms (32 bytes).
CREATE TABLE consent_version (
    consent_id TEXT NOT NULL,
    version BIGINT NOT NULL CHECK (version >= 1),
    person BYTEA NOT NULL CHECK (length(person) = 32),
    revoked BIGINT NOT NULL CHECK (revoked IN (0, 1)),
    valid_until_micros BIGINT NOT NULL,
    recorded_at_micros BIGINT NOT NULL,
    -- The rest of the declaration (scope, evidence, information, revocation), as JSON.
    body TEXT NOT NULL,
    PRIMARY KEY (consent_id, version)
);
CREATE INDEX consent_version_person ON consent_version (person);
CREATE INDEX consent_version_until ON consent_version (valid_until_micros);
-- Versions are history: never changed, never removed.
CREATE FUNCTION consent_version_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'consent versions are append-only'; END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER consent_version_no_change BEFORE UPDATE OR DELETE ON consent_version
FOR EACH ROW EXECUTE FUNCTION consent_version_append_only();
CREATE TRIGGER consent_version_no_truncate BEFORE TRUNCATE ON consent_version
FOR EACH STATEMENT EXECUTE FUNCTION consent_version_append_only();

CREATE TABLE relationship (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    person BYTEA NOT NULL CHECK (length(person) = 32),
    institution TEXT NOT NULL,
    capacity TEXT NOT NULL,
    since_micros BIGINT NOT NULL,
    until_micros BIGINT,
    declared_by_user TEXT NOT NULL,
    ended_by_user TEXT
);
CREATE INDEX relationship_person ON relationship (person, institution);
-- At most one open relationship per person, institution and capacity.
CREATE UNIQUE INDEX relationship_open ON relationship (person, institution, capacity) WHERE until_micros IS NULL;

CREATE TABLE consent_change (
    sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consent_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('revoked', 'expired')),
    at_micros BIGINT NOT NULL,
    institutions TEXT NOT NULL,
    UNIQUE (consent_id, kind)
);
