package rollouts

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// waitLocked waits until a session waits for a lock in a statement naming
// table.
func waitLocked(t *testing.T, s *Store, table string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'`, table).Scan(&n)
		return err == nil && n > 0
	}, 30*time.Second, 2*time.Millisecond)
}

// outcome is what a call started by goAsync returned.
type outcome[T any] struct {
	v   T
	err error
}

// goAsync runs f in a goroutine; its outcome comes on the channel.
func goAsync[T any](f func() (T, error)) <-chan outcome[T] {
	ch := make(chan outcome[T], 1)
	go func() {
		v, err := f()
		ch <- outcome[T]{v, err}
	}()
	return ch
}

// TestDoneOfMemberInsertedDuringIt: a failure of a member beyond the head,
// whose Done finds no row (the rest not yet in) and then no backlog (Fill
// committed between the two statements), is still recorded and halts.
func TestDoneOfMemberInsertedDuringIt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 30)
	s := NewStore(pool, nil)
	s.StartHead = 2
	r, _, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Count: 2}, {Percent: 100}}, HaltFailureRate: -1})
	require.NoError(t, err)
	head := members(t, pool, r.ID)
	require.Len(t, head, 2)
	var outside string
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.tenants
		WHERE id <> ALL($1) ORDER BY id LIMIT 1`, keys(head)).Scan(&outside))

	// Another process's Fill, in progress: it holds the backlog table (here
	// by a table lock, so that Done's look at the backlog waits for it).
	fill, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = fill.Rollback(context.WithoutCancel(ctx)) }()
	_, err = fill.Exec(ctx, `LOCK TABLE tenantmigrate.rollout_backlog IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	_, err = fill.Exec(ctx, `INSERT INTO tenantmigrate.rollout_tenants (rollout_id, tenant_id, wave, position)
		SELECT $1, id, width_bucket(pos, $2::bigint[]), pos
		FROM (SELECT id, b.canaries + row_number() OVER (ORDER BY md5(id), id) - 1 AS pos
			FROM tenantmigrate.rollout_backlog b, unnest(b.tenant_ids) AS id WHERE b.rollout_id = $1) t
		WHERE pos >= 2`, r.ID, r.WaveEnds)
	require.NoError(t, err)
	_, err = fill.Exec(ctx, `DELETE FROM tenantmigrate.rollout_backlog WHERE rollout_id = $1`, r.ID)
	require.NoError(t, err)

	done := goAsync(func() (bool, error) {
		return s.Done(ctx, 2, Result{TenantID: outside, Status: "FAILED_STALE", Err: "boom", FailedVersion: 2})
	})
	waitLocked(t, s, "rollout_backlog") // record found no row; awaitFill looks
	require.NoError(t, fill.Commit(ctx))

	got := <-done
	require.NoError(t, got.err)
	require.Equal(t, "FAILED", members(t, pool, r.ID)[outside].State, "the failure is recorded")
	require.True(t, got.v, "and halts the rollout")
}

// TestEnsureTakesInFailureNotYetRecorded: a tenant whose run in the rollout
// to 2 failed (FAILED_STALE committed in tenants) but whose Done has not
// reached the rollout yet when the rollout to 3 is created is a member of
// the rollout to 3, as the tenants that failed in the superseded rollout
// are. Done lands afterwards, on a superseded rollout, and records nothing.
func TestEnsureTakesInFailureNotYetRecorded(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 10)
	s := NewStore(pool, nil)
	_, _, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Percent: 100}}})
	require.NoError(t, err)
	ids, err := s.Claim(ctx, 2, 1, 0, nil)
	require.NoError(t, err)
	require.Len(t, ids, 1)
	failed := ids[0]
	// The run fails: the executor records the tenant's failure first...
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.tenants SET migrations_status = 'FAILED_STALE', last_error = 'boom', updated_at = now()
		WHERE id = $1`, failed)
	require.NoError(t, err)
	// ...the fixing release's fleet scan creates its rollout meanwhile...
	r3, created, err := s.Ensure(ctx, 3, Options{})
	require.NoError(t, err)
	require.True(t, created)
	// ...and then the rollout hook's Done reaches the rollout to 2.
	_, err = s.Done(ctx, 2, Result{TenantID: failed, Status: "FAILED_STALE", Err: "boom", FailedVersion: 2})
	require.NoError(t, err)

	_, in := members(t, pool, r3.ID)[failed]
	require.True(t, in, "the tenant that failed in the superseded rollout is in the fixing one")
}

// TestDoneHaltsNotOnFailureResumedMeanwhile: Done's failure check and its
// halt are two transactions. A halt (by another process) and a resume that
// both land between them leave the rollout RUNNING with the failure retried
// (PENDING); Done must not halt it again on the count it read before.
func TestDoneHaltsNotOnFailureResumedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 10) // tenant-0010 is the canary
	s := NewStore(pool, nil)
	r, _, err := s.Ensure(ctx, 2, Options{CanarySelector: "canary=true", HaltFailureRate: -1})
	require.NoError(t, err)

	// The other process's halt and the operator's resume, in one
	// transaction that holds the rollout's row from before Done: Done's
	// record and failure count read past the lock, its halt waits for it.
	other, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = other.Rollback(context.WithoutCancel(ctx)) }()
	_, err = other.Exec(ctx, `SELECT 1 FROM tenantmigrate.rollouts WHERE id = $1 FOR SHARE`, r.ID)
	require.NoError(t, err)

	done := goAsync(func() (bool, error) {
		return s.Done(ctx, 2, Result{TenantID: "tenant-0010", Status: "FAILED_STALE", Err: "boom", FailedVersion: 2})
	})
	waitLocked(t, s, "tenantmigrate.rollouts")
	_, err = other.Exec(ctx, `UPDATE tenantmigrate.rollouts SET state = 'HALTED', halt_reason = 'wave 1: 1 failed' WHERE id = $1`, r.ID)
	require.NoError(t, err)
	_, err = other.Exec(ctx, `UPDATE tenantmigrate.rollouts SET state = 'RUNNING', halt_reason = NULL WHERE id = $1`, r.ID)
	require.NoError(t, err)
	_, err = other.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'PENDING', claimed_at = NULL, finished_at = NULL
		WHERE rollout_id = $1 AND (state = 'QUEUED' OR state = 'FAILED' AND wave >= 0)`, r.ID)
	require.NoError(t, err)
	require.NoError(t, other.Commit(ctx))

	got := <-done
	require.NoError(t, got.err)
	require.False(t, got.v, "halted")
	r, err = s.Get(ctx, r.ID)
	require.NoError(t, err)
	require.Zero(t, r.Failed, "the resume retries the failure")
	require.Equal(t, StateRunning, r.State, "and is not undone by a halt on a failure it cleared")
}

// TestSettleStaleKeepsResultRecordedMeanwhile: Step's settling of a stale
// claim (a feeder's claim older than StaleClaim whose job is gone) does not
// undo a result recorded while it waited for the member's row. The failure
// here is a request's run of the tenant, recorded after Step's statement
// took its snapshot: the statement re-checks only the row it updates, so
// its conditions must be on that row. Before, the stale claim's old
// version decided, the failure went back to PENDING, was not counted, and
// the rollout ran on instead of halting.
func TestSettleStaleKeepsResultRecordedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := backlogFleet(t, 1)
	s := NewStore(pool, nil)
	r, _, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Percent: 100}}, HaltFailureRate: -1})
	require.NoError(t, err)
	got, err := s.Claim(ctx, 2, 1, 0, nil) // the feeder's: its job is gone
	require.NoError(t, err)
	require.Equal(t, []string{"tenant-0001"}, got)
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET claimed_at = now() - $2::bigint * interval '1 millisecond'
		WHERE rollout_id = $1`, r.ID, (DefaultStaleClaim + time.Second).Milliseconds())
	require.NoError(t, err)

	// The request's run records its failure: the tenant's state and the
	// member's, committed once Step waits for the member's row.
	rec, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = rec.Rollback(context.WithoutCancel(ctx)) }()
	_, err = rec.Exec(ctx, `UPDATE tenantmigrate.tenants SET migrations_status = 'FAILED_STALE', last_error = 'boom', updated_at = now()
		WHERE id = 'tenant-0001'`)
	require.NoError(t, err)
	_, err = rec.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'FAILED', last_error = 'boom', failed_version = 2,
		attempts = attempts + 1, finished_at = now() WHERE rollout_id = $1`, r.ID)
	require.NoError(t, err)

	step := goAsync(func() (State, error) { return s.Step(ctx, 2) })
	waitLocked(t, s, "rollout_tenants")
	require.NoError(t, rec.Commit(ctx))

	res := <-step
	require.NoError(t, res.err)
	require.Equal(t, "FAILED", members(t, pool, r.ID)["tenant-0001"].State, "the failure recorded meanwhile is kept")
	require.Equal(t, StateHalted, res.v, "and halts the rollout")
}
