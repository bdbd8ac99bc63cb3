-- Two more summaries kept by triggers, like tenant_counts (00012), so that
-- the reads of status, the fleet page and the admin API read a few rows
-- instead of grouping a table of a million:
--
--   * server_counts: the tenants per server (tenants.server, NULL not
--     counted), for the server list (internal/servers List: status,
--     GET /admin/servers, metrics). The GROUP BY server it replaces took
--     ~0.5 s at 1M tenants.
--   * rollout_counts: a rollout's tenants per (wave, state), PENDING
--     excepted (derived from the wave's size), with their run durations and
--     span of finishes, for its progress and ETA
--     (internal/rollouts Get: status, the fleet page, GET /admin/rollouts).
--     The GROUP BY over rollout_tenants it replaces took 0.19 s at 1M.
--
-- As in 00012: statement-level triggers with transition tables, so a
-- statement that writes many rows (a rollout's creation, a claim of a
-- batch) adjusts each group once; only the groups whose figures change are
-- touched (a run's result that keeps the tenant's server, a heartbeat of a
-- claim, takes no counter lock); groups are updated in key order, so two
-- transactions never wait on each other's counters in opposite orders.
-- Counters are ordinary rows that commit and roll back with the write that
-- moved them, so they are exact under concurrent writes
-- (TestServerCountsUnderConcurrentWrites, TestRolloutCountsUnderConcurrentWrites).
-- Groups that fall to zero stay, with n = 0; readers skip them.
--
-- rollout_counts has no foreign key to rollouts: a rollout deleted cascades
-- to its rollout_tenants, whose delete trigger then brings its counts to
-- zero.

-- +goose Up
CREATE TABLE tenantmigrate.server_counts (
    server text PRIMARY KEY,
    n bigint NOT NULL
);

-- +goose StatementBegin
CREATE FUNCTION tenantmigrate.server_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM tenantmigrate.server_counts;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tenantmigrate.server_counts AS c (server, n)
        SELECT server, count(*) FROM new_rows WHERE server IS NOT NULL
        GROUP BY 1 ORDER BY 1
        ON CONFLICT (server) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO tenantmigrate.server_counts AS c (server, n)
        SELECT server, -count(*) FROM old_rows WHERE server IS NOT NULL
        GROUP BY 1 ORDER BY 1
        ON CONFLICT (server) DO UPDATE SET n = c.n + excluded.n;
    ELSE
        -- UPDATE: the net change per server; only the servers that move.
        INSERT INTO tenantmigrate.server_counts AS c (server, n)
        SELECT server, sum(n) FROM (
            SELECT server, 1 AS n FROM new_rows WHERE server IS NOT NULL
            UNION ALL
            SELECT server, -1 FROM old_rows WHERE server IS NOT NULL
        ) d
        GROUP BY server HAVING sum(n) <> 0 ORDER BY server
        ON CONFLICT (server) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER server_counts_insert AFTER INSERT ON tenantmigrate.tenants
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.server_counts_apply();
CREATE TRIGGER server_counts_update AFTER UPDATE ON tenantmigrate.tenants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.server_counts_apply();
CREATE TRIGGER server_counts_delete AFTER DELETE ON tenantmigrate.tenants
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.server_counts_apply();
CREATE TRIGGER server_counts_truncate AFTER TRUNCATE ON tenantmigrate.tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.server_counts_apply();

CREATE TABLE tenantmigrate.rollout_counts (
    rollout_id bigint NOT NULL,
    wave integer NOT NULL,
    state text NOT NULL,
    n bigint NOT NULL,
    -- Of the group's rows with a duration: the sum of duration_ms and how
    -- many they are (the mean run time, and the run time the ETA's
    -- parallelism divides by the wave's span).
    run_ms bigint NOT NULL,
    timed bigint NOT NULL,
    -- The first and last finished_at seen in the group (the wave's span).
    -- Widened as rows come in, not narrowed as they leave (a min or max
    -- cannot be taken back); cleared when the group empties. Close enough
    -- for an estimate; the counts above are exact.
    first_finished timestamptz,
    last_finished timestamptz,
    PRIMARY KEY (rollout_id, wave, state)
);

-- +goose StatementBegin
CREATE FUNCTION tenantmigrate.rollout_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- The rows a statement added (+1) and removed (-1), PENDING ones
    -- aside: a wave's pending tenants are its size less the others (readers
    -- derive them), so the insert of a rollout's tenants (Store.Ensure,
    -- Store.Fill: a million rows, a minute in one transaction) touches no
    -- counter, and the claims and results of the tenants already in never
    -- wait for it.
    added CONSTANT text := $q$SELECT rollout_id, wave, state, 1 AS n, coalesce(duration_ms, 0) AS ms,
            (duration_ms IS NOT NULL)::int AS timed, finished_at AS first_f, finished_at AS last_f
        FROM new_rows WHERE state <> 'PENDING'$q$;
    removed CONSTANT text := $q$SELECT rollout_id, wave, state, -1 AS n, -coalesce(duration_ms, 0) AS ms,
            -(duration_ms IS NOT NULL)::int AS timed, NULL::timestamptz AS first_f, NULL::timestamptz AS last_f
        FROM old_rows WHERE state <> 'PENDING'$q$;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM tenantmigrate.rollout_counts;
        RETURN NULL;
    END IF;
    -- The net change per group, only for the groups that move, in key
    -- order. A trigger has the transition tables of its event only, hence
    -- the source chosen here and the statement run with EXECUTE (which sees
    -- them too).
    EXECUTE format($q$
        INSERT INTO tenantmigrate.rollout_counts AS c (rollout_id, wave, state, n, run_ms, timed, first_finished, last_finished)
        SELECT rollout_id, wave, state, sum(n), sum(ms), sum(timed), min(first_f), max(last_f) FROM (%s) d
        GROUP BY rollout_id, wave, state HAVING sum(n) <> 0 OR sum(ms) <> 0 OR sum(timed) <> 0 OR min(first_f) IS NOT NULL
        ORDER BY rollout_id, wave, state
        ON CONFLICT (rollout_id, wave, state) DO UPDATE
            SET n = c.n + excluded.n, run_ms = c.run_ms + excluded.run_ms, timed = c.timed + excluded.timed,
                first_finished = CASE WHEN c.n + excluded.n = 0 THEN NULL
                    ELSE least(c.first_finished, excluded.first_finished) END,
                last_finished = CASE WHEN c.n + excluded.n = 0 THEN NULL
                    ELSE greatest(c.last_finished, excluded.last_finished) END$q$,
        CASE TG_OP WHEN 'INSERT' THEN added WHEN 'DELETE' THEN removed ELSE added || ' UNION ALL ' || removed END);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER rollout_counts_insert AFTER INSERT ON tenantmigrate.rollout_tenants
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.rollout_counts_apply();
CREATE TRIGGER rollout_counts_update AFTER UPDATE ON tenantmigrate.rollout_tenants
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.rollout_counts_apply();
CREATE TRIGGER rollout_counts_delete AFTER DELETE ON tenantmigrate.rollout_tenants
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.rollout_counts_apply();
CREATE TRIGGER rollout_counts_truncate AFTER TRUNCATE ON tenantmigrate.rollout_tenants
    FOR EACH STATEMENT EXECUTE FUNCTION tenantmigrate.rollout_counts_apply();

-- The counts of the rows already there. The migration runs in one
-- transaction; the locks keep writers out until it commits, so no write is
-- counted twice or missed.
LOCK TABLE tenantmigrate.tenants, tenantmigrate.rollout_tenants IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO tenantmigrate.server_counts (server, n)
SELECT server, count(*) FROM tenantmigrate.tenants WHERE server IS NOT NULL GROUP BY 1;
INSERT INTO tenantmigrate.rollout_counts (rollout_id, wave, state, n, run_ms, timed, first_finished, last_finished)
SELECT rollout_id, wave, state, count(*), coalesce(sum(duration_ms), 0), count(duration_ms), min(finished_at), max(finished_at)
FROM tenantmigrate.rollout_tenants WHERE state <> 'PENDING' GROUP BY 1, 2, 3;

-- +goose Down
DROP TRIGGER rollout_counts_truncate ON tenantmigrate.rollout_tenants;
DROP TRIGGER rollout_counts_delete ON tenantmigrate.rollout_tenants;
DROP TRIGGER rollout_counts_update ON tenantmigrate.rollout_tenants;
DROP TRIGGER rollout_counts_insert ON tenantmigrate.rollout_tenants;
DROP FUNCTION tenantmigrate.rollout_counts_apply();
DROP TABLE tenantmigrate.rollout_counts;
DROP TRIGGER server_counts_truncate ON tenantmigrate.tenants;
DROP TRIGGER server_counts_delete ON tenantmigrate.tenants;
DROP TRIGGER server_counts_update ON tenantmigrate.tenants;
DROP TRIGGER server_counts_insert ON tenantmigrate.tenants;
DROP FUNCTION tenantmigrate.server_counts_apply();
DROP TABLE tenantmigrate.server_counts;
