-- Roles of the audit log on PostgreSQL: the owner migrates and maintains the log, the
-- gateway's service role only appends and reads it. Run this as the owner, in the log's
-- database, once the owner has migrated it (start the gateway once with the owner's URL);
-- then give the gateway the service role's URL. docs/operator-guide.md, "The audit log".
--
-- What the service role can do: INSERT and SELECT on the entries and checkpoints (the
-- tables' triggers refuse UPDATE and DELETE anyway), create a month's key (INSERT) and read
-- keys, set or lengthen the retention limit (the trigger refuses shortening), and destroy
-- keys through `audit_destroy_keys` (SECURITY DEFINER). The key table's trigger refuses a
-- destruction before the month is due *at the time the caller gives*; a forged later time
-- passes it, and `cii audit verify` fails on it (a month destroyed after the newest logged
-- retention run, or that no logged run names). An exceptional early shredding goes through
-- `audit_shred_early` (SECURITY DEFINER), which records the approval's entry with the
-- destruction; `cii audit verify` fails unless the log holds that approval and its request by
-- another user and role. What it cannot: TRUNCATE, DROP or ALTER anything, disable a trigger,
-- UPDATE or DELETE a key row directly.
CREATE ROLE cii_gateway LOGIN;
GRANT USAGE ON SCHEMA public TO cii_gateway;
GRANT SELECT ON _sqlx_migrations TO cii_gateway;
GRANT SELECT, INSERT ON audit_entry, audit_checkpoint, audit_body_key, audit_node TO cii_gateway;
GRANT SELECT, INSERT, UPDATE ON audit_retention TO cii_gateway;
GRANT EXECUTE ON FUNCTION audit_destroy_keys(TEXT[], BIGINT) TO cii_gateway;
GRANT EXECUTE ON FUNCTION audit_shred_early(TEXT, BIGINT, BIGINT) TO cii_gateway;
GRANT SELECT ON audit_early_shredding TO cii_gateway;
-- The sequencer's lease (several replicas on one database): through its functions only.
GRANT EXECUTE ON FUNCTION audit_lease_acquire(TEXT, DOUBLE PRECISION) TO cii_gateway;
GRANT EXECUTE ON FUNCTION audit_lease_renew(TEXT, BIGINT, DOUBLE PRECISION) TO cii_gateway;
GRANT EXECUTE ON FUNCTION audit_lease_release(TEXT, BIGINT) TO cii_gateway;
GRANT EXECUTE ON FUNCTION audit_fence(BIGINT) TO cii_gateway;
GRANT SELECT ON audit_lease TO cii_gateway;
-- The append queue every replica writes and the sequencer integrates (migration 0008).
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_queue TO cii_gateway;
GRANT USAGE ON SEQUENCE audit_queue_id_seq TO cii_gateway;
GRANT EXECUTE ON FUNCTION audit_dequeued(BIGINT, BIGINT) TO cii_gateway;
GRANT EXECUTE ON FUNCTION audit_extends(BIGINT, BIGINT) TO cii_gateway;
GRANT SELECT, INSERT, UPDATE ON audit_cosigned TO cii_gateway;
