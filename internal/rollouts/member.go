package rollouts

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// AdmitMember is Admit for one tenant's run, and also returns the id of
// the active rollout to target the tenant is in (0 when none), so that the
// run's history row names the rollout it counted toward (a rollback of
// that rollout reads them). One query.
func (s *Store) AdmitMember(ctx context.Context, target int64, tenantID string) (int64, error) {
	var (
		id     int64
		state  State
		reason string
		member bool
	)
	err := s.pool.QueryRow(ctx, `SELECT r.id, r.state, coalesce(r.halt_reason, ''),
			EXISTS (SELECT 1 FROM tenantmigrate.rollout_tenants rt
				WHERE rt.rollout_id = r.id AND rt.tenant_id = $2 AND rt.state <> 'REMOVED')
		FROM tenantmigrate.rollouts r
		WHERE r.target_version = $1 AND r.state IN ('RUNNING', 'HALTED')`, target, tenantID).Scan(&id, &state, &reason, &member)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read rollout to %d: %w", target, err)
	}
	if state == StateHalted {
		return 0, &HaltedError{RolloutID: id, TargetVersion: target, Reason: reason}
	}
	if !member {
		return 0, nil
	}
	return id, nil
}
