-- A replay adds nothing. A transfer id belongs to the user who first sent it, and a
-- permitted pull's answer is kept, sealed to the requester (never in clear), for
-- `store.pull_answer_keep_seconds`: a retry of the same request by the same user gets
-- these bytes, not the holder's newer data; once they are gone the id answers
-- PULL_ANSWER_GONE.
ALTER TABLE transfer ADD COLUMN acting_user TEXT NOT NULL DEFAULT '';
-- gateway.v1.TransferResponse with `provided_sealed`, until `answer_until_micros`.
ALTER TABLE transfer ADD COLUMN answer BLOB;
ALTER TABLE transfer ADD COLUMN answer_until_micros INTEGER NOT NULL DEFAULT 0;
CREATE INDEX transfer_answer_until ON transfer (answer_until_micros) WHERE answer IS NOT NULL;
