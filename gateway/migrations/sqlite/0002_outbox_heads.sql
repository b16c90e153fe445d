-- Each recipient's head of line (its oldest waiting delivery) by index, not by a scan per row:
-- `due_heads` and `head_for` run after every delivery.
CREATE INDEX outbox_recipient_seq ON outbox (recipient, seq);
-- A transfer's own delivery (`head_for`, after each decision) by index.
CREATE INDEX outbox_transfer ON outbox (sender, transfer_id);
