package history

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Moved is a tenant a rollout moved, for a rollback of that rollout.
type Moved struct {
	TenantID string
	// Before is the tenant's recorded version before the rollout: the
	// from_version of its first run in it (0 for a tenant never migrated
	// before).
	Before int64
}

// RolloutMoved returns the tenants rollout rolloutID moved: those with a
// completed up run that counted toward it, each with the version it had
// before its first run in it (failed or not), in tenant id order.
func (s *Store) RolloutMoved(ctx context.Context, rolloutID string) ([]Moved, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT DISTINCT ON (tenant_id) tenant_id, coalesce(from_version, 0)
		FROM tenantmigrate.runs r
		WHERE rollout_id = $1 AND direction = 'up'
			AND EXISTS (SELECT 1 FROM tenantmigrate.runs c
				WHERE c.rollout_id = $1 AND c.tenant_id = r.tenant_id AND c.direction = 'up' AND c.result = 'completed')
		ORDER BY tenant_id, started_at, id`, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("read the tenants rollout %s moved: %w", rolloutID, err)
	}
	moved, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Moved, error) {
		var m Moved
		return m, r.Scan(&m.TenantID, &m.Before)
	})
	if err != nil {
		return nil, fmt.Errorf("read the tenants rollout %s moved: %w", rolloutID, err)
	}
	return moved, nil
}
