-- key_id is the id of the encryption key a tenant's database_url is
-- encrypted under (Cipher.KeyID: 16 hex digits derived from the key's secret
-- with HKDF), written with every database_url. A read opens the URL with that
-- key without trying the others, and Store.Rekey finds the rows not under the
-- current key with "key_id IS DISTINCT FROM $current". NULL: stored before
-- key ids were recorded; every configured key is tried.
--
-- The id lives beside the ciphertext, not in it: a ciphertext is still the
-- random nonce followed by the sealed URL, as before, so a release that
-- predates key ids, sharing the control plane during a rolling deploy, keeps
-- reading every row written under the key it has. (A prefix in the bytes
-- could not be told apart from the random first byte of an older row.)

-- +goose Up
ALTER TABLE tenantmigrate.tenants ADD COLUMN key_id text NULL
    CONSTRAINT tenants_key_id_format CHECK (key_id ~ '^[0-9a-f]{16}$');

-- +goose Down
ALTER TABLE tenantmigrate.tenants DROP COLUMN key_id;
