-- One-off consents, once a transfer relied on them (the gateway marks them when
-- it permits). A used one-off consent covers no further transfer.
CREATE TABLE consent_used (
    consent_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    used_at_micros BIGINT NOT NULL,
    transfer TEXT NOT NULL
);
