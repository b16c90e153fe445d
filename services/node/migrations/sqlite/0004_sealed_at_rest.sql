-- Payloads sealed at rest, as AVS numbers already are: what was sent, what was received
-- and what is published are AES-256-GCM under the store key, bound to their row by the
-- associated data (`sealed` = 1). Rows of earlier releases (`sealed` = 0) are sealed when
-- the node opens its store. Sent and received items carry their time, for the retention
-- limit (`[store] keep_days`).
ALTER TABLE outgoing ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outgoing ADD COLUMN saved_micros INTEGER NOT NULL DEFAULT 0;
UPDATE outgoing SET saved_micros = CAST(strftime('%s', 'now') AS INTEGER) * 1000000;
ALTER TABLE inbox ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE published ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
