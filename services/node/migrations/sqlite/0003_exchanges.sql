-- Transfers this node sent: the exact request bytes, resent on retry so the
-- gateway recognises them (libpep ciphertexts differ on every encryption).
CREATE TABLE outgoing (
    transfer_id  TEXT PRIMARY KEY,
    send_sha256  BLOB NOT NULL,
    request      BLOB NOT NULL
) STRICT;

-- What the gateway delivered. `item` is an encoded node.v1.InboxItem without
-- the AVS number; `identity` is the libpep ciphertext of the AVS number (only
-- when released), decrypted when the IT system lists the inbox.
CREATE TABLE inbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    sender           TEXT    NOT NULL,
    transfer_id      TEXT    NOT NULL,
    item             BLOB    NOT NULL,
    identity         BLOB,
    received_micros  INTEGER NOT NULL,
    acknowledged     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sender, transfer_id)
) STRICT;

-- What this institution holds about a person, to answer permitted pulls.
CREATE TABLE published (
    local_record_id  TEXT PRIMARY KEY,
    data             BLOB NOT NULL
) STRICT;
