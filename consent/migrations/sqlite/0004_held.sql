-- Changes recorded held (issue 20): a version is written with its row here, and the row is
-- removed when the gateway, having logged the change, activates it. While held, a new consent
-- or a new version covers nothing; a held revocation is in force at once. What the gateway
-- needs to complete the change after a crash is kept with it: the log's size when it asked and
-- its entry without the version (opaque here).
CREATE TABLE consent_held (
    consent_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    log_size INTEGER NOT NULL,
    entry_draft BLOB NOT NULL,
    held_micros INTEGER NOT NULL,
    PRIMARY KEY (consent_id, version)
) STRICT;
