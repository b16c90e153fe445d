-- Pulls of other institutions waiting for this institution's review (issue 21: the
-- discloser weighs). `offer` is the encoded node.v1.OfferReviewRequest, sealed at rest like
-- every payload (it carries the requester's written request); `local_record_id` is this
-- institution's record of the person ('' if not enrolled here).
CREATE TABLE review (
    requester TEXT NOT NULL,
    transfer_id TEXT NOT NULL,
    offer BLOB NOT NULL,
    local_record_id TEXT NOT NULL,
    offered_micros INTEGER NOT NULL,
    deadline_micros INTEGER NOT NULL,
    answered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (requester, transfer_id)
);
CREATE INDEX review_waiting ON review (answered, offered_micros);
