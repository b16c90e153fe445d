-- The node's index of enrolled persons: its own domain pseudonym → its own
-- record id. The AVS number is kept only sealed (AES-256-GCM, key from the
-- node's config, bound to the record id), never in clear and never hashed.
CREATE TABLE persons (
    local_record_id TEXT PRIMARY KEY NOT NULL,
    pseudonym BLOB NOT NULL UNIQUE CHECK (length(pseudonym) = 32),
    avs_sealed BLOB NOT NULL,
    enrolled_at_micros INTEGER NOT NULL
) STRICT;
