package rollouts_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
)

// etaRollout returns a Store on a fresh control plane whose n tenants are
// at version 1, the rollout to 2 it started for them with waves and pause,
// and its pool.
func etaRollout(t *testing.T, n int, waves string, pause time.Duration) (*rollouts.Store, *rollouts.Rollout, *pgxpool.Pool) {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, fleettest.NewControlPlane(t, ""))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status)
		SELECT 'tenant-' || i, '\x00'::bytea, 1, 'COMPLETED' FROM generate_series(1, $1) i`, n)
	require.NoError(t, err)
	ws, err := rollouts.ParseWaves(waves)
	require.NoError(t, err)
	s := rollouts.NewStore(pool, nil)
	r, created, err := s.Ensure(ctx, 2, rollouts.Options{Waves: ws, WavePause: pause})
	require.NoError(t, err)
	require.True(t, created)
	_, err = s.Fill(ctx, 2) // every tenant in, for finish below
	require.NoError(t, err)
	return s, r, pool
}

// finishBase is the clock finish counts back from: one instant for every
// call, so that tenants finished "1 s ago" by two statements share a
// finish, and the parallelism measured over their span is exact.
var finishBase = time.Now()

// finish marks k pending tenants of wave (0-based) of rollout id finished
// in state, each having run for d and finished ago before finishBase.
func finish(t *testing.T, pool *pgxpool.Pool, id int64, wave, k int, state string, d, ago time.Duration) {
	t.Helper()
	tag, err := pool.Exec(t.Context(), `UPDATE tenantmigrate.rollout_tenants
		SET state = $4, duration_ms = $5, finished_at = $6
		WHERE rollout_id = $1 AND tenant_id IN (SELECT tenant_id FROM tenantmigrate.rollout_tenants
			WHERE rollout_id = $1 AND wave = $2 AND state = 'PENDING' ORDER BY position LIMIT $3)`,
		id, wave, k, state, d.Milliseconds(), finishBase.Add(-ago))
	require.NoError(t, err)
	require.EqualValues(t, k, tag.RowsAffected())
}

// historyRuns writes runs that applied a migration and took 1 s, 2 s, ...,
// n s, started an hour ago: their p50 is (n+1)/2 s.
func historyRuns(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	_, err := pool.Exec(t.Context(), `
		INSERT INTO tenantmigrate.runs (tenant_id, from_version, to_version, result, started_at, finished_at, process, trigger)
		SELECT 'h' || i, 1, 2, 'completed', now() - interval '1 hour', now() - interval '1 hour' + i * interval '1 second', 'p:1', 'queue'
		FROM generate_series(1, $1) i`, n)
	require.NoError(t, err)
}

// requireAbout asserts that eta is want after a time between before and
// after (the read's clock), give or take tolerance.
func requireAbout(t *testing.T, want time.Duration, before, after time.Time, eta *time.Time, tolerance time.Duration, msg string) {
	t.Helper()
	require.NotNil(t, eta, msg)
	require.False(t, eta.Before(before.Add(want-tolerance)), "%s: ETA %s is before %s + %s", msg, eta, before, want)
	require.False(t, eta.After(after.Add(want+tolerance)), "%s: ETA %s is after %s + %s", msg, eta, after, want)
}

// TestETAFromHistory: a running rollout's ETA is ceil(pending / P) rounds
// of the history's p50 per wave left, P the parallelism measured in its
// latest wave with finished tenants (run time over span), plus the pauses
// of the waves to come.
func TestETAFromHistory(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("waves", func(t *testing.T) {
		t.Parallel()
		s, r, pool := etaRollout(t, 10, "2,100%", 0)
		require.Equal(t, []int64{2, 10}, r.WaveEnds)
		// Runs of 1 s to 10 s in the history: p50 5.5 s.
		historyRuns(t, pool, 10)
		// Wave 1: two tenants of 4 s at once, 10 s ago: parallelism 2.
		finish(t, pool, r.ID, 0, 2, "COMPLETED", 4*time.Second, 10*time.Second)

		before := time.Now()
		got, err := s.Get(ctx, r.ID)
		after := time.Now()
		require.NoError(t, err)
		require.Equal(t, rollouts.ETAFromHistory, got.ETABasis)
		require.Equal(t, 5500*time.Millisecond, got.ETAPerTenant)
		require.InDelta(t, 2.0, got.ETAParallelism, 0.01)
		require.EqualValues(t, 8, got.Pending)
		// 8 pending at 2 at once: 4 rounds of 5.5 s.
		requireAbout(t, 22*time.Second, before, after, got.ETA, 0, "rollout")
		require.Nil(t, got.Waves[0].ETA, "wave 1 has nothing pending")
		require.Equal(t, got.ETA, got.Waves[1].ETA)

		// The feeder opens wave 2; three of its tenants ran 1 s each, side
		// by side, with a failure among them: parallelism 3 now, the
		// canary's no longer counts.
		state, err := s.Step(ctx, 2)
		require.NoError(t, err)
		require.Equal(t, rollouts.StateRunning, state)
		finish(t, pool, r.ID, 1, 2, "COMPLETED", time.Second, time.Second)
		finish(t, pool, r.ID, 1, 1, "FAILED", time.Second, time.Second)
		before = time.Now()
		got, err = s.Get(ctx, r.ID)
		after = time.Now()
		require.NoError(t, err)
		require.Equal(t, 1, got.CurrentWave)
		require.InDelta(t, 3.0, got.ETAParallelism, 0.01)
		require.EqualValues(t, 5, got.Pending)
		// 5 pending at 3 at once: 2 rounds of 5.5 s.
		requireAbout(t, 11*time.Second, before, after, got.ETA, 0, "rollout")

		// The JSON's eta keeps its shape: a time, or null once it ended.
		_, err = pool.Exec(ctx, `UPDATE tenantmigrate.rollouts SET state = 'COMPLETED', finished_at = now() WHERE id = $1`, r.ID)
		require.NoError(t, err)
		got, err = s.Get(ctx, r.ID)
		require.NoError(t, err)
		require.Nil(t, got.ETA)
		require.Empty(t, got.ETABasis)
	})

	t.Run("pauses", func(t *testing.T) {
		t.Parallel()
		s, r, pool := etaRollout(t, 10, "2,5,100%", time.Minute)
		historyRuns(t, pool, 10)
		finish(t, pool, r.ID, 0, 2, "COMPLETED", 4*time.Second, 10*time.Second)
		// Wave 1 passed: its pause starts now.
		_, err := s.Step(ctx, 2)
		require.NoError(t, err)

		before := time.Now()
		got, err := s.Get(ctx, r.ID)
		after := time.Now()
		require.NoError(t, err)
		require.Equal(t, 0, got.CurrentWave, "wave 2 waits for the pause")
		require.Equal(t, rollouts.ETAFromHistory, got.ETABasis)
		// Wave 2: the pause (less the little that passed), then 3 pending at
		// 2 at once: 2 rounds. Wave 3: another pause, then 3 rounds of 5.
		requireAbout(t, time.Minute+11*time.Second, before, after, got.Waves[1].ETA, 2*time.Second, "wave 2")
		requireAbout(t, 2*time.Minute+27500*time.Millisecond, before, after, got.Waves[2].ETA, 2*time.Second, "wave 3")
		require.Equal(t, got.Waves[2].ETA, got.ETA)
	})

	t.Run("pace without history", func(t *testing.T) {
		t.Parallel()
		s, r, pool := etaRollout(t, 10, "2,100%", 0)
		// Started 100 s ago; 2 of 10 done: 50 s each for the 8 left.
		_, err := pool.Exec(ctx, `UPDATE tenantmigrate.rollouts SET started_at = now() - interval '100 seconds' WHERE id = $1`, r.ID)
		require.NoError(t, err)
		finish(t, pool, r.ID, 0, 2, "COMPLETED", 4*time.Second, 10*time.Second)
		// Runs that failed or applied nothing are no history to go by.
		_, err = pool.Exec(ctx, `
			INSERT INTO tenantmigrate.runs (tenant_id, from_version, to_version, result, started_at, finished_at, process, trigger)
			VALUES ('x', 1, 1, 'completed', now() - interval '1 minute', now(), 'p:1', 'queue'),
				('y', 1, 1, 'failed', now() - interval '1 minute', now(), 'p:1', 'queue')`)
		require.NoError(t, err)

		got, err := s.Get(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, rollouts.ETAFromPace, got.ETABasis)
		require.Zero(t, got.ETAPerTenant)
		require.Zero(t, got.ETAParallelism)
		requireAbout(t, 400*time.Second, got.StartedAt.Add(100*time.Second), time.Now(), got.ETA, 2*time.Second, "rollout")
	})

	t.Run("far", func(t *testing.T) {
		t.Parallel()
		s, r, pool := etaRollout(t, 4, "1,100%", 0)
		// 50 years for one tenant: three more would be 150 years, which is
		// put at 100, without overflowing.
		_, err := pool.Exec(ctx, `UPDATE tenantmigrate.rollouts SET started_at = now() - interval '50 years' WHERE id = $1`, r.ID)
		require.NoError(t, err)
		finish(t, pool, r.ID, 0, 1, "COMPLETED", time.Second, 0)
		before := time.Now()
		got, err := s.Get(ctx, r.ID)
		after := time.Now()
		require.NoError(t, err)
		require.Equal(t, rollouts.ETAFromPace, got.ETABasis)
		requireAbout(t, 100*365*24*time.Hour, before, after, got.ETA, 0, "rollout")
	})

	t.Run("none", func(t *testing.T) {
		t.Parallel()
		s, r, pool := etaRollout(t, 4, "2,100%", 0)
		historyRuns(t, pool, 3)
		// Nothing finished: no parallelism and no pace to go by.
		got, err := s.Get(ctx, r.ID)
		require.NoError(t, err)
		require.Nil(t, got.ETA)
		for i, w := range got.Waves {
			require.Nil(t, w.ETA, fmt.Sprintf("wave %d", i+1))
		}
		// A halted rollout has none either.
		finish(t, pool, r.ID, 0, 1, "FAILED", time.Second, 0)
		_, err = s.Step(ctx, 2)
		require.NoError(t, err)
		got, err = s.Get(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, rollouts.StateHalted, got.State)
		require.Nil(t, got.ETA)
	})
}
