package rollouts

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestRolloutCountsUnderConcurrentWrites: the progress Get reads
// (tenantmigrate.rollout_counts, kept by triggers on rollout_tenants,
// control-plane migration 00015) equals a GROUP BY over rollout_tenants
// after concurrent claims, results (completed with durations, failed,
// failed for good), releases, steps, halts and resumes, late tenants added
// to the last wave, and transactions rolled back; and after a superseding
// rollout and a rollout deleted. Nothing deadlocks on the counters.
func TestRolloutCountsUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, controlplane.Migrate(ctx, pool))
	addTenants := func(from, to int) {
		_, err := pool.Exec(ctx, `INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status)
			SELECT 't' || lpad(i::text, 4, '0'), '\x00'::bytea, 1, 'COMPLETED' FROM generate_series($1::int, $2::int) AS i
			ON CONFLICT DO NOTHING`, from, to)
		require.NoError(t, err)
	}
	addTenants(1, 300)
	s := NewStore(pool, nil)
	r, created, err := s.Ensure(ctx, 2, Options{Waves: []WaveSize{{Count: 10}, {Percent: 40}}, HaltFailureRate: 0.2})
	require.NoError(t, err)
	require.True(t, created)
	_, err = s.Fill(ctx, 2) // the rest of the rollout's tenants
	require.NoError(t, err)
	requireRolloutCountsMatch(t, s, r.ID)

	var (
		g errgroup.Group
	)
	for w := range 6 {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 3))
			var mine []string
			for range 120 {
				var err error
				op := rng.IntN(8)
				switch op {
				case 0, 1:
					var ids []string
					ids, err = s.Claim(ctx, 2, 1+rng.IntN(8), 0, nil)
					mine = append(mine, ids...)
				case 2, 3, 4:
					if len(mine) == 0 {
						continue
					}
					i := rng.IntN(len(mine))
					tid := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					res := Result{TenantID: tid, Status: "COMPLETED", Duration: time.Duration(1+rng.IntN(900)) * time.Millisecond}
					switch rng.IntN(6) {
					case 0:
						res.Status, res.Err, res.FailedVersion = "FAILED_STALE", "boom", 2
					case 1:
						res.Status, res.Err = "FAILED", "retried later"
						mine = append(mine, tid)
					}
					_, err = s.Done(ctx, 2, res)
				case 5:
					if len(mine) > 0 && rng.IntN(2) == 0 {
						n := 1 + rng.IntN(len(mine))
						err = s.Release(ctx, 2, mine[:n])
						mine = mine[n:]
					} else {
						var st State
						st, err = s.Step(ctx, 2)
						if err == nil && st == StateHalted {
							_, err = s.Resume(ctx, r.ID)
							if errors.Is(err, ErrInvalid) {
								err = nil // another writer resumed it
							}
						}
					}
				case 6:
					// Late tenants join the last wave.
					from := 301 + rng.IntN(60)
					addTenants(from, from+rng.IntN(5))
					_, _, err = s.AddLate(ctx, 2, false)
				case 7:
					// A write rolled back moves nothing.
					tx, txErr := pool.Begin(ctx)
					if txErr != nil {
						return txErr
					}
					// It locks the rollout first, as every writer of many
					// rows does (see Release).
					_, err = tx.Exec(ctx, `SELECT 1 FROM tenantmigrate.rollouts WHERE id = $1 FOR NO KEY UPDATE`, r.ID)
					if err == nil {
						_, err = tx.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'COMPLETED', duration_ms = 5 WHERE rollout_id = $1 AND wave = $2`,
							r.ID, rng.IntN(3))
					}
					_ = tx.Rollback(ctx)
				}
				if err != nil {
					return fmt.Errorf("writer %d, op %d: %w", w, op, err)
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	requireRolloutCountsMatch(t, s, r.ID)

	// A newer release's rollout supersedes this one, with counts of its own.
	_, err = pool.Exec(ctx, `UPDATE tenantmigrate.tenants SET migrations_version = 2 WHERE id < 't0100'`)
	require.NoError(t, err)
	r3, created, err := s.Ensure(ctx, 3, Options{})
	require.NoError(t, err)
	require.True(t, created)
	_, err = s.Fill(ctx, 3)
	require.NoError(t, err)
	requireRolloutCountsMatch(t, s, r.ID)
	requireRolloutCountsMatch(t, s, r3.ID)

	// A rollout deleted takes its tenants along, and its counts to zero.
	_, err = pool.Exec(ctx, `DELETE FROM tenantmigrate.rollouts WHERE id = $1`, r.ID)
	require.NoError(t, err)
	var left int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.rollout_counts WHERE rollout_id = $1 AND (n <> 0 OR run_ms <> 0 OR timed <> 0)`, r.ID).Scan(&left))
	require.Zero(t, left)
	requireRolloutCountsMatch(t, s, r3.ID)
}

// requireRolloutCountsMatch compares the progress Get returns (from the
// summary) with the same figures computed over rollout_tenants.
func requireRolloutCountsMatch(t *testing.T, s *Store, id int64) {
	t.Helper()
	ctx := t.Context()
	got, err := s.Get(ctx, id)
	require.NoError(t, err)

	want := make([]Wave, len(got.Waves))
	rows, err := s.pool.Query(ctx, `SELECT wave, state, count(*), coalesce(sum(duration_ms) FILTER (WHERE state = 'COMPLETED'), 0)
		FROM tenantmigrate.rollout_tenants WHERE rollout_id = $1 GROUP BY 1, 2`, id)
	require.NoError(t, err)
	defer rows.Close()
	var completed, sumMS, total int64
	for rows.Next() {
		var (
			wave     int
			state    string
			n, durMS int64
		)
		require.NoError(t, rows.Scan(&wave, &state, &n, &durMS))
		require.Less(t, wave, len(want))
		total += n
		switch state {
		case "COMPLETED":
			want[wave].Completed += n
			completed += n
			sumMS += durMS
		case "FAILED":
			want[wave].Failed += n
		case "REMOVED":
			want[wave].Removed += n
		default:
			want[wave].Pending += n
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, got.Total, total, "every tenant of the rollout counted")
	for i := range want {
		g := got.Waves[i]
		require.Equal(t, want[i], Wave{Completed: g.Completed, Failed: g.Failed, Pending: g.Pending, Removed: g.Removed}, "wave %d", i)
	}
	var avg time.Duration
	if completed > 0 {
		avg = time.Duration(sumMS/completed) * time.Millisecond
	}
	require.Equal(t, avg, got.AvgDuration)
}
