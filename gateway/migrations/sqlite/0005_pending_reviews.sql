-- Pulls waiting for the holder's review (issue 21: the discloser weighs). Nothing is decided
-- while a row is here. The hold is logged (PULL_HELD_FOR_REVIEW, `held_entry`) before the
-- holder's node is told (`offered`); the holder's caseworker's answer is logged
-- (PULL_REVIEWED) and kept here (`reviewer` …); the requester's next call with the same
-- request (`request_sha256`) is decided then, and the row goes. The request itself is not
-- kept: its written request and the person stay with the requester's node, which resends them.
CREATE TABLE pending_review (
    requester TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    subject TEXT NOT NULL,
    request_sha256 BLOB NOT NULL,
    created_micros INTEGER NOT NULL,
    deadline_micros INTEGER NOT NULL,
    held_entry INTEGER NOT NULL DEFAULT -1,
    offered INTEGER NOT NULL DEFAULT 0,
    reviewer TEXT,
    approved INTEGER,
    reviewer_facts TEXT NOT NULL DEFAULT '',
    refusal_reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (requester, transfer_id)
);
CREATE INDEX pending_review_requester ON pending_review (requester);
CREATE INDEX pending_review_deadline ON pending_review (deadline_micros);
