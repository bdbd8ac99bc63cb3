-- The database servers of the fleet (internal/servers): a server is the
-- lower-case host:port of a tenant's URL, or its "server" label.
--
-- servers holds what every instance must agree on about a server: its cap
-- (max_concurrent, NULL: the instance's --max-per-server), and whether it is
-- UP or DOWN (shared, so that every instance holds its tenants back while it
-- is down and one instance probes it). A row is added the first time a
-- server is used or configured. id numbers the server in the advisory locks
-- that are its slots: key (0x746d7376 << 32) | (id << 10) | slot, held for a
-- run on a session of the running process, so a slot is free again as soon
-- as that process's connection ends, however it dies.

-- +goose Up
CREATE TABLE tenantmigrate.servers (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY
        CONSTRAINT servers_id_range CHECK (id < 4194304),
    server text NOT NULL CONSTRAINT servers_server_key UNIQUE,
    max_concurrent integer NULL
        CONSTRAINT servers_max_concurrent_range CHECK (max_concurrent BETWEEN 1 AND 1000),
    state text NOT NULL DEFAULT 'UP'
        CONSTRAINT servers_state CHECK (state IN ('UP', 'DOWN')),
    -- When state last changed (or the row was added).
    since timestamptz NOT NULL DEFAULT now(),
    -- The last connection-level failure, without credentials.
    last_error text NULL,
    -- Connection-level failures counted since failures_since (the window).
    failures integer NOT NULL DEFAULT 0,
    failures_since timestamptz NULL,
    -- When the server was last probed while DOWN: one instance claims each
    -- probe by moving it.
    probed_at timestamptz NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The server of each tenant, as derived when its URL was last written (and
-- by each run, which also sees its labels): counts per server, and the
-- tenants of a server to probe or wake, without decrypting every URL. NULL:
-- written by an older release; filled in by the next start.
ALTER TABLE tenantmigrate.tenants ADD COLUMN server text NULL;
CREATE INDEX tenants_server_idx ON tenantmigrate.tenants (server);

-- +goose Down
DROP INDEX tenantmigrate.tenants_server_idx;
ALTER TABLE tenantmigrate.tenants DROP COLUMN server;
DROP TABLE tenantmigrate.servers;
