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

// RolloutMoved returns the tenants rollout rolloutID moved: those with an
// up run that counted toward it and completed, or failed after applying
// versions, on the target it is registered
// with now (not one removed and registered again, or moved to another
// database or schema, since), each with the version it had
// before its first run in it (failed or not), in tenant id order.
func (s *Store) RolloutMoved(ctx context.Context, rolloutID string) ([]Moved, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT DISTINCT ON (r.tenant_id) r.tenant_id, coalesce(r.from_version, 0)
		FROM tenantmigrate.runs r
		JOIN tenantmigrate.tenants t ON t.id = r.tenant_id
		WHERE r.rollout_id = $1 AND r.direction = 'up'
			AND (r.target_seq IS NULL OR r.target_seq = t.target_seq)
			AND EXISTS (SELECT 1 FROM tenantmigrate.runs c
				WHERE c.rollout_id = $1 AND c.tenant_id = r.tenant_id AND c.direction = 'up'
					AND (c.result = 'completed' OR c.to_version > coalesce(c.from_version, 0))
					AND (c.target_seq IS NULL OR c.target_seq = t.target_seq))
		ORDER BY r.tenant_id, r.started_at, r.id`, rolloutID)
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
