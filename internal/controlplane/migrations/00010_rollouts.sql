-- A rollout moves the fleet to one target version in waves, and halts when a
-- wave's failures exceed its rate (internal/rollouts). Every instance and
-- process reads and writes these rows, so a halt seen by one is seen by all.
--
-- rollouts: at most one per target (rollouts_target_key), at most one
-- RUNNING or HALTED at a time (rollouts_one_active: a newer target
-- supersedes the active one in the transaction that creates it).
-- wave_ends are the cumulative wave sizes (position < wave_ends[i+1] is in
-- wave i, 0-based), computed from the options at creation and never
-- changed: a rerun gets the same waves.
--
-- rollout_tenants: the tenants behind at creation, in their order
-- (position: canary selector first, then md5 of the id, a hash that stays
-- the same across PostgreSQL versions), each with its wave and its state in
-- the rollout: PENDING (not yet handed out), QUEUED (handed to the queue or
-- a migrate --all worker), COMPLETED, FAILED (ended FAILED_STALE) or REMOVED
-- (deleted from the control plane meanwhile). Feeding takes the PENDING
-- rows of the open waves in position order through the partial index, so a
-- batch costs the same at 1M tenants as at 10; the QUEUED and FAILED
-- partial indexes keep the per-batch counts to the few rows in flight.

-- +goose Up
CREATE TABLE tenantmigrate.rollouts (
    id bigserial PRIMARY KEY,
    target_version bigint NOT NULL CONSTRAINT rollouts_target_key UNIQUE,
    state text NOT NULL
        CONSTRAINT rollouts_state CHECK (state IN ('RUNNING', 'HALTED', 'COMPLETED', 'ABORTED', 'SUPERSEDED')),
    halt_reason text NULL,
    canary_selector text NOT NULL DEFAULT '',
    wave_ends bigint[] NOT NULL,
    halt_failure_rate double precision NOT NULL,
    wave_pause_ms bigint NOT NULL DEFAULT 0,
    -- The wave being run (0-based); the waves below it passed.
    current_wave integer NOT NULL DEFAULT 0,
    -- When the current wave's last tenant finished, for the wave pause.
    wave_done_at timestamptz NULL,
    total bigint NOT NULL,
    created_by text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX rollouts_one_active ON tenantmigrate.rollouts ((true))
    WHERE state IN ('RUNNING', 'HALTED');

CREATE TABLE tenantmigrate.rollout_tenants (
    rollout_id bigint NOT NULL REFERENCES tenantmigrate.rollouts (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    wave integer NOT NULL,
    position bigint NOT NULL,
    state text NOT NULL DEFAULT 'PENDING'
        CONSTRAINT rollout_tenants_state CHECK (state IN ('PENDING', 'QUEUED', 'COMPLETED', 'FAILED', 'REMOVED')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text NULL,
    failed_version bigint NULL,
    duration_ms bigint NULL,
    -- When the row became QUEUED: a QUEUED row whose job was lost is
    -- handed out again only after a while (Store.Advance).
    claimed_at timestamptz NULL,
    -- The advisory lock key a process running the tenant itself (migrate
    -- --all) holds while it lives; NULL for a tenant handed to the queue.
    -- A QUEUED row whose claimer's lock is gone (the process died) is
    -- handed out again at once.
    claimed_by bigint NULL,
    finished_at timestamptz NULL,
    PRIMARY KEY (rollout_id, tenant_id)
);
CREATE INDEX rollout_tenants_pending_idx ON tenantmigrate.rollout_tenants (rollout_id, wave, position)
    WHERE state = 'PENDING';
CREATE INDEX rollout_tenants_queued_idx ON tenantmigrate.rollout_tenants (rollout_id, wave)
    WHERE state = 'QUEUED';
CREATE INDEX rollout_tenants_failed_idx ON tenantmigrate.rollout_tenants (rollout_id, wave, finished_at)
    WHERE state = 'FAILED';

-- +goose Down
DROP TABLE tenantmigrate.rollout_tenants;
DROP TABLE tenantmigrate.rollouts;
