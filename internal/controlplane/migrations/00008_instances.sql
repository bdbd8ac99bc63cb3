-- One row per process that runs migrations (serve instances, migrate
-- processes), written by internal/instances: the process registers at start,
-- then refreshes heartbeat_at (the control plane's clock, now()) every tenth
-- of its instance timeout, which it writes too. An instance is dead when it
-- stopped (stopped_at set) or when heartbeat_at + timeout < now(): the jobs
-- River lists as running on it (river_job.attempted_by, last element: the
-- River client id is the instance id) go back to the queue. Rows of dead
-- instances are deleted once no running job names them.
--
-- Other tables may reference instances(id) ON DELETE CASCADE for what a
-- process holds and must give up when it dies.

-- +goose Up
CREATE TABLE tenantmigrate.instances (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    -- The instance's own timeout: each process says how long it may be
    -- silent, so processes with different settings judge each other alike.
    timeout interval NOT NULL CONSTRAINT instances_timeout_positive CHECK (timeout > interval '0'),
    -- Set by a graceful stop: dead at once, whatever the timeout.
    stopped_at timestamptz NULL
);

-- +goose Down
DROP TABLE tenantmigrate.instances;
