package rollouts

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStepHaltsOnFailureRecordedDuringIt: a canary's failure recorded
// while Step runs, after its failure check and before its look at whether
// the wave is done, halts the rollout at that wave; it does not pass the
// wave on the failure that finished it and open the next wave (whose
// tenants would be handed out until the next halt check). The failure
// check's statement and the wave's are two snapshots: here the second waits
// for the locked backlog table while the failure commits.
// cmd TestMigrateRolloutHaltsAndResumes once saw "HALTED ... wave 2 of 2".
func TestStepHaltsOnFailureRecordedDuringIt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 10) // tenant-0010 is the canary
	s := NewStore(pool, nil)
	r, created, err := s.Ensure(ctx, 2, Options{CanarySelector: "canary=true", HaltFailureRate: -1})
	require.NoError(t, err)
	require.True(t, created)
	require.Len(t, r.WaveEnds, 2)
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'QUEUED', claimed_at = now()
		WHERE rollout_id = $1 AND tenant_id = 'tenant-0010'`, r.ID)
	require.NoError(t, err)

	holder, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.WithoutCancel(ctx)) }()
	_, err = holder.Exec(ctx, `LOCK TABLE tenantmigrate.rollout_backlog IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	done := goAsync(func() (State, error) { return s.Step(ctx, 2) })
	waitLocked(t, s, "rollout_backlog") // Step looks at the wave
	// The canary's run fails now, as Done records it.
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'FAILED', last_error = 'boom', finished_at = now()
		WHERE rollout_id = $1 AND tenant_id = 'tenant-0010'`, r.ID)
	require.NoError(t, err)
	require.NoError(t, holder.Commit(ctx))

	got := <-done
	require.NoError(t, got.err)
	require.Equal(t, StateHalted, got.v)
	r, err = s.Get(ctx, r.ID)
	require.NoError(t, err)
	require.Equal(t, StateHalted, r.State)
	require.Equal(t, 0, r.CurrentWave, "halted at the canary wave, the next one never opened")
	require.Contains(t, r.HaltReason, "wave 1 of 1 tenants: 1 failed")
}
