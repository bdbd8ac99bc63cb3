-- A tenant whose database tenantmigrate created from the template
-- (internal/provisioning) records the database's name on the provision
-- server and the random token of the comment it put on the database.
-- Deprovisioning (DELETE /admin/tenants/{id}?dropDatabase=true) drops a
-- database only when both match, so it never drops a database tenantmigrate
-- did not create. NULL: the tenant's database was registered, not
-- provisioned. A change of the tenant's URL clears both: the tenant no longer
-- points at the database that was provisioned.

-- +goose Up
ALTER TABLE tenantmigrate.tenants
    ADD COLUMN provisioned_database text NULL,
    ADD COLUMN provision_token text NULL,
    ADD CONSTRAINT tenants_provisioned_both CHECK ((provisioned_database IS NULL) = (provision_token IS NULL));

-- +goose Down
ALTER TABLE tenantmigrate.tenants
    DROP COLUMN provisioned_database,
    DROP COLUMN provision_token;
