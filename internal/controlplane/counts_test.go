package controlplane

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
)

// TestStatsSummaryUnderConcurrentWrites: the counts Stats reads (kept by
// triggers, migration 00012) equal a GROUP BY over the tenants table after
// concurrent writers of every kind: registrations, removals, results,
// URL and schema changes, bulk updates, and transactions rolled back.
// Nothing deadlocks on the counters.
func TestStatsSummaryUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	const ids = 40
	id := func(i int) string { return fmt.Sprintf("t%02d", i) }
	for i := range ids / 2 {
		_, err := s.Create(ctx, Tenant{ID: id(i), DatabaseURL: "postgres://u@h/d" + id(i)})
		require.NoError(t, err)
	}

	var g errgroup.Group
	for w := range 8 {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 150 {
				tid := id(rng.IntN(ids))
				var err error
				switch rng.IntN(8) {
				case 0:
					_, err = s.Create(ctx, Tenant{ID: tid, DatabaseURL: "postgres://u@h/" + tid})
					if errors.Is(err, ErrTenantExists) {
						err = nil
					}
				case 1:
					err = s.Delete(ctx, tid)
				case 2, 3:
					o := originNow(ctx, s, tid)
					err = s.RecordSuccess(ctx, tid, o, int64(1+rng.IntN(4)))
				case 4:
					o := originNow(ctx, s, tid)
					v := int64(rng.IntN(4))
					err = s.RecordFailure(ctx, tid, o, &v, []Status{StatusFailed, StatusFailedStale}[rng.IntN(2)], "boom")
				case 5:
					schema := fmt.Sprintf("s%d", rng.IntN(3))
					_, err = s.Patch(ctx, tid, TenantPatch{Schema: &schema})
				case 6:
					_, err = s.MarkLackingVersion(ctx, int64(rng.IntN(4)), "lacks")
				case 7:
					// A write rolled back moves nothing.
					tx, txErr := s.Pool().Begin(ctx)
					if txErr != nil {
						return txErr
					}
					_, err = tx.Exec(ctx, `UPDATE tenantmigrate.tenants SET migrations_version = 99, migrations_status = 'COMPLETED'`)
					_ = tx.Rollback(ctx)
				}
				if errors.Is(err, ErrTenantNotFound) || errors.Is(err, ErrStaleResult) {
					err = nil
				}
				if err != nil {
					return fmt.Errorf("writer %d on %s: %w", w, tid, err)
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())

	// Also a TRUNCATE's reset, after which new rows count from zero.
	requireCountsMatch(t, s, 3)
	_, err := s.Pool().Exec(ctx, `TRUNCATE tenantmigrate.tenants`)
	require.NoError(t, err)
	_, err = s.Create(ctx, Tenant{ID: "after", DatabaseURL: "postgres://u@h/after"})
	require.NoError(t, err)
	requireCountsMatch(t, s, 3)
}

// originNow is currentOrigin without a testing.TB, for writer goroutines.
func originNow(ctx context.Context, s *Store, id string) RunOrigin {
	var (
		o      RunOrigin
		status *string
	)
	if err := s.Pool().QueryRow(ctx,
		`SELECT target_seq, migrations_version, migrations_status FROM tenantmigrate.tenants WHERE id = $1`, id).
		Scan(&o.TargetSeq, &o.Version, &status); err != nil {
		return RunOrigin{}
	}
	if status != nil {
		o.Status = Status(*status)
	}
	return o
}

// requireCountsMatch compares Stats with the same figures computed over the
// whole table.
func requireCountsMatch(t *testing.T, s *Store, latest int64) {
	t.Helper()
	ctx := testContext(t)
	got, err := s.Stats(ctx, latest)
	require.NoError(t, err)

	want := Stats{ByVersion: []VersionCount{}, ByStatus: map[Status]int64{}}
	rows, err := s.Pool().Query(ctx, `
		SELECT migrations_version, coalesce(migrations_status, ''), count(*)
		FROM tenantmigrate.tenants GROUP BY 1, 2 ORDER BY 1 NULLS FIRST, 2`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var (
			v      *int64
			status string
			n      int64
		)
		require.NoError(t, rows.Scan(&v, &status, &n))
		want.Total += n
		if v == nil || *v < latest {
			want.Behind += n
		}
		want.ByStatus[Status(status)] += n
		if last := len(want.ByVersion) - 1; last >= 0 && equalVersion(want.ByVersion[last].Version, v) {
			want.ByVersion[last].Count += n
		} else {
			want.ByVersion = append(want.ByVersion, VersionCount{Version: v, Count: n})
		}
	}
	require.NoError(t, rows.Err())
	require.Equal(t, want, got)
}
