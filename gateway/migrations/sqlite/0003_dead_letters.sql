-- Deliveries no item can block: the order is kept per (sender, recipient) pair, not per
-- recipient, so a pair's head of line is found by index; a delivery refused for good, or
-- undeliverable past the retry limit, leaves the outbox for `dead_letter` (still sealed
-- to the recipient: no plaintext here either).
CREATE INDEX outbox_pair_seq ON outbox (recipient, sender, seq);
-- When the delivery first entered the outbox (0: queued by an earlier release; set at its
-- first failure), from which the retry limit counts.
ALTER TABLE outbox ADD COLUMN queued_micros INTEGER NOT NULL DEFAULT 0;

CREATE TABLE dead_letter (
    seq          INTEGER PRIMARY KEY,
    recipient    TEXT    NOT NULL,
    sender       TEXT    NOT NULL,
    transfer_id  TEXT    NOT NULL,
    delivery     BLOB    NOT NULL,
    attempts     INTEGER NOT NULL,
    error_code   TEXT    NOT NULL,
    dead_micros  INTEGER NOT NULL,
    UNIQUE (sender, transfer_id, recipient)
);
