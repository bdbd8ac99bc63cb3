package servers

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// List returns every server known to the control plane: those with tenants
// and those with a row (used or configured), in name order.
//
// Tenants comes from the per-server summary the tenants table's triggers
// keep (tenantmigrate.server_counts, control-plane migration 00015), so the
// list costs the same at 1M tenants as at 10. Running counts the slots held
// now in pg_locks, by every process; Waiting the live migrate_tenant jobs of
// the server's tenants that are not running (River's table in the same
// schema: bounded by the rollout's feed, not by the fleet).
func (m *Manager) List(ctx context.Context) ([]tenanttype.Server, error) {
	rows, err := m.cfg.Pool.Query(ctx, `
		WITH t AS (
			SELECT server, n FROM tenantmigrate.server_counts WHERE n <> 0
		), w AS (
			SELECT t.server, count(*) AS n
			FROM tenantmigrate.river_job j JOIN tenantmigrate.tenants t ON t.id = j.args->>'tenant_id'
			WHERE j.kind = 'migrate_tenant' AND j.state IN ('available', 'scheduled', 'retryable', 'pending')
				AND t.server IS NOT NULL
			GROUP BY t.server
		), r AS (
			SELECT (objid::bigint >> 10)::integer AS id, count(*) AS n
			FROM pg_locks
			WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND classid = $2::bigint::oid
				AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
			GROUP BY 1
		)
		SELECT coalesce(s.server, t.server), coalesce(s.state, 'UP'), coalesce(s.since, now()),
			coalesce(r.n, 0), coalesce(w.n, 0), coalesce(t.n, 0),
			coalesce(s.max_concurrent, $1), s.max_concurrent IS NOT NULL, coalesce(s.last_error, '')
		FROM tenantmigrate.servers s
		FULL JOIN t ON t.server = s.server
		LEFT JOIN r ON r.id = s.id
		LEFT JOIN w ON w.server = coalesce(s.server, t.server)
		ORDER BY 1`, m.cfg.MaxPerServer, lockNamespace)
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (tenanttype.Server, error) {
		var s tenanttype.Server
		var st string
		err := row.Scan(&s.Server, &st, &s.Since, &s.Running, &s.Waiting, &s.Tenants,
			&s.MaxConcurrent, &s.MaxConcurrentOverride, &s.LastError)
		s.State = tenanttype.ServerState(st)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	return out, nil
}

// SetMaxConcurrent sets the cap of server for every process (n in 1 to
// MaxConcurrentLimit), or removes its override with nil. Runs already
// holding a slot above a lowered cap finish; no new run starts until the
// server is below it.
func (m *Manager) SetMaxConcurrent(ctx context.Context, server string, n *int) error {
	if n != nil && (*n < 1 || *n > MaxConcurrentLimit) {
		return fmt.Errorf("max concurrent %d for server %s: want 1 to %d", *n, server, MaxConcurrentLimit)
	}
	if _, err := m.cfg.Pool.Exec(ctx, `
		WITH u AS (
			UPDATE tenantmigrate.servers SET max_concurrent = $2, updated_at = now()
			WHERE server = $1
			RETURNING 1
		)
		-- Inserted only when missing: an INSERT draws an id (of the bounded
		-- servers_id_range) even when it ends in its ON CONFLICT.
		INSERT INTO tenantmigrate.servers (server, max_concurrent)
		SELECT $1, $2 WHERE NOT EXISTS (SELECT FROM u)
		ON CONFLICT (server) DO UPDATE SET max_concurrent = EXCLUDED.max_concurrent, updated_at = now()`,
		server, n); err != nil {
		return fmt.Errorf("set max concurrent of server %s: %w", server, err)
	}
	return nil
}
