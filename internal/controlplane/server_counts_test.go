package controlplane

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// TestServerCountsUnderConcurrentWrites: the tenants per server that the
// server list reads (tenantmigrate.server_counts, kept by triggers,
// migration 00015) equal a GROUP BY server over the tenants table after
// concurrent writers of every kind that moves a tenant's server:
// registrations, removals, URL changes, "server" labels set and removed,
// bulk writes (a fill of servers after they were cleared), writes that
// keep the server (results), and transactions rolled back. Nothing
// deadlocks on the counters.
func TestServerCountsUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	const ids = 40
	id := func(i int) string { return fmt.Sprintf("t%02d", i) }
	url := func(rng *rand.Rand, tid string) string {
		return fmt.Sprintf("postgres://u@db%d.example:5432/%s", rng.IntN(4), tid)
	}
	rng0 := rand.New(rand.NewPCG(99, 1))
	for i := range ids / 2 {
		_, err := s.Create(ctx, Tenant{ID: id(i), DatabaseURL: url(rng0, id(i))})
		require.NoError(t, err)
	}
	requireServerCountsMatch(t, s)

	var g errgroup.Group
	for w := range 8 {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 2))
			for range 150 {
				tid := id(rng.IntN(ids))
				var err error
				op := rng.IntN(7)
				switch op {
				case 0:
					t := Tenant{ID: tid, DatabaseURL: url(rng, tid)}
					if rng.IntN(3) == 0 {
						t.Labels = map[string]string{"server": "pool-a"}
					}
					_, err = s.Create(ctx, t)
					if errors.Is(err, ErrTenantExists) {
						err = nil
					}
				case 1:
					err = s.Delete(ctx, tid)
				case 2:
					u := url(rng, tid)
					_, err = s.Patch(ctx, tid, TenantPatch{DatabaseURL: &u})
				case 3:
					// The "server" label overrides the URL's server; nil
					// removes it again.
					var v *string
					if rng.IntN(2) == 0 {
						v = ptr([]string{"pool-a", "pool-b"}[rng.IntN(2)])
					}
					_, err = s.Patch(ctx, tid, TenantPatch{Labels: map[string]*string{"server": v}})
				case 4:
					// A result keeps the server: no counter moves.
					err = s.RecordSuccess(ctx, tid, originNow(ctx, s, tid), int64(1+rng.IntN(4)))
				case 5:
					// A bulk write that clears servers (as rows of an
					// older release have none), then the fill. It locks
					// its rows in id order, as the store's own writers of
					// many rows do (MarkLackingVersion; FillServers skips
					// locked rows): two of these in different scan orders
					// deadlocked (40P01) once in CI.
					_, err = s.Pool().Exec(ctx, `UPDATE tenantmigrate.tenants SET server = NULL WHERE id IN (
						SELECT id FROM tenantmigrate.tenants WHERE id > $1 AND id < $2 ORDER BY id FOR UPDATE)`,
						id(rng.IntN(ids)), id(rng.IntN(ids)))
					if err == nil {
						_, err = s.FillServers(ctx)
					}
				case 6:
					// A write rolled back moves nothing.
					tx, txErr := s.Pool().Begin(ctx)
					if txErr != nil {
						return txErr
					}
					_, err = tx.Exec(ctx, `UPDATE tenantmigrate.tenants SET server = 'rolled-back' WHERE id = $1`, tid)
					_ = tx.Rollback(ctx)
				}
				if errors.Is(err, ErrTenantNotFound) || errors.Is(err, ErrStaleResult) {
					err = nil
				}
				if err != nil {
					return fmt.Errorf("writer %d, op %d on %s: %w", w, op, tid, err)
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())
	requireServerCountsMatch(t, s)

	// A TRUNCATE resets them; new rows count from zero.
	_, err := s.Pool().Exec(ctx, `TRUNCATE tenantmigrate.tenants`)
	require.NoError(t, err)
	_, err = s.Create(ctx, Tenant{ID: "after", DatabaseURL: "postgres://u@db9.example:5432/after"})
	require.NoError(t, err)
	requireServerCountsMatch(t, s)
	require.Equal(t, map[string]int64{"db9.example:5432": 1}, serverCounts(t, s))
}

// requireServerCountsMatch compares the summary with a GROUP BY over the
// whole table.
func requireServerCountsMatch(t *testing.T, s *Store) {
	t.Helper()
	ctx := testContext(t)
	rows, err := s.Pool().Query(ctx, `
		SELECT server, count(*) FROM tenantmigrate.tenants WHERE server IS NOT NULL GROUP BY 1`)
	require.NoError(t, err)
	want := map[string]int64{}
	for rows.Next() {
		var (
			server string
			n      int64
		)
		require.NoError(t, rows.Scan(&server, &n))
		want[server] = n
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, want)
	require.Equal(t, want, serverCounts(t, s))
}

func serverCounts(t *testing.T, s *Store) map[string]int64 {
	t.Helper()
	rows, err := s.Pool().Query(testContext(t), `SELECT server, n FROM tenantmigrate.server_counts WHERE n <> 0`)
	require.NoError(t, err)
	got := map[string]int64{}
	for rows.Next() {
		var (
			server string
			n      int64
		)
		require.NoError(t, rows.Scan(&server, &n))
		got[server] = n
	}
	require.NoError(t, rows.Err())
	return got
}
