-- The gateway's operational store. Architecture Invariant (no-plaintext-at-gateway):
-- no AVS number, no plaintext payload, no written-request text. The outbox holds
-- deliveries whose content is sealed to the recipient (node.v1.SealedPayload) and
-- whose person is a ciphertext for the recipient only.

-- One row per (sender, transfer id): the idempotency record and the state the sender sees.
CREATE TABLE transfer (
    sender          TEXT    NOT NULL,
    transfer_id     TEXT    NOT NULL,
    request_sha256  BLOB    NOT NULL,
    recipient       TEXT    NOT NULL,
    pull            INTEGER NOT NULL,
    -- gateway.v1.TransferResponse without provided data: decision, state, receipt.
    response        BLOB    NOT NULL,
    state           INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    created_micros  INTEGER NOT NULL,
    -- Held (1) from the decision until its audit entry is durable: a held transfer is
    -- never delivered. `entry` (the encoded audit entry, metadata only) and
    -- `log_size_before` let a restarted gateway find or append that entry exactly once.
    held            INTEGER NOT NULL DEFAULT 0,
    entry           BLOB,
    log_size_before INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sender, transfer_id)
);
CREATE INDEX transfer_held ON transfer (held) WHERE held = 1;

-- Deliveries waiting for their recipient; deleted once the recipient stored them.
CREATE TABLE outbox (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient            TEXT    NOT NULL,
    sender               TEXT    NOT NULL,
    transfer_id          TEXT    NOT NULL,
    delivery             BLOB    NOT NULL,
    next_attempt_micros  INTEGER NOT NULL,
    attempts             INTEGER NOT NULL DEFAULT 0,
    held                 INTEGER NOT NULL DEFAULT 0,
    UNIQUE (recipient, sender, transfer_id)
);
CREATE INDEX outbox_due ON outbox (next_attempt_micros);

-- Obligations created by permits.
CREATE TABLE obligation (
    id                TEXT    PRIMARY KEY,
    owner             TEXT    NOT NULL,
    sender            TEXT    NOT NULL,
    recipient         TEXT    NOT NULL,
    transfer_id       TEXT    NOT NULL,
    due_micros        INTEGER NOT NULL,
    -- common.v1.Obligation as answered.
    wire              BLOB    NOT NULL,
    fulfilled_micros  INTEGER
);
CREATE INDEX obligation_owner ON obligation (owner, due_micros);

-- Which delivered transfers relied on which consent (for change notices).
CREATE TABLE consent_use (
    consent_id   TEXT NOT NULL,
    sender       TEXT NOT NULL,
    transfer_id  TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    PRIMARY KEY (consent_id, sender, transfer_id)
);

-- The position in the consent registry's change feed already turned into notices.
CREATE TABLE consent_feed (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    after  INTEGER NOT NULL
);
INSERT INTO consent_feed (id, after) VALUES (1, 0);
