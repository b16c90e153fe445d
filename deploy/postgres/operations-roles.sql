-- Roles of the gateway's operational store on PostgreSQL (held records, idempotency, outbox,
-- pending reviews, feed positions; a database of its own, apart from the audit log): the owner
-- migrates it (`cii gateway --migrate` with the owner's URL, a Job in
-- deploy/kubernetes/gateway.yaml), the gateways' service role reads and writes its rows and
-- nothing more. Run this as the owner, in the store's database, once it is migrated.
--
-- What the service role cannot: CREATE, ALTER, DROP or TRUNCATE anything (a release's schema
-- change is the owner's Job, run before the replicas of that release start).
CREATE ROLE cii_gateway_ops LOGIN;
GRANT USAGE ON SCHEMA public TO cii_gateway_ops;
GRANT SELECT ON _sqlx_migrations TO cii_gateway_ops;
GRANT SELECT, INSERT, UPDATE, DELETE ON transfer, outbox, obligation, consent_use, consent_feed, dead_letter, pending_review TO cii_gateway_ops;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO cii_gateway_ops;
