-- Pulls waiting for the holder's review (issue 21: the discloser weighs). Nothing is decided
-- or logged while a row is here: the holder's caseworker answers (Gateway/AnswerReview),
-- then the gateway decides, logs and answers, and the row goes; past `deadline_micros` the
-- pull is denied (REVIEW_TIMEOUT). `request` is the encoded gateway.v1.TransferRequest as
-- the requester sent it (a pull carries no payload: ids, purpose, categories, the person's
-- ciphertext in the requester's domain, the written request).
CREATE TABLE pending_review (
    requester TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    subject TEXT NOT NULL,
    request BLOB NOT NULL,
    request_sha256 BLOB NOT NULL,
    created_micros INTEGER NOT NULL,
    deadline_micros INTEGER NOT NULL,
    offered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (requester, transfer_id)
);
CREATE INDEX pending_review_holder ON pending_review (holder, created_micros);
