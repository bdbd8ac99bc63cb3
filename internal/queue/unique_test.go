package queue_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// TestEnqueueUniquePerRelease: a live job of an older release (target 2)
// does not swallow a newer release's enqueue of the same tenant (target 3),
// through Enqueue and EnqueueTx alike; within one release a tenant still
// has one live job. A job without a target (queued before targets) keeps
// the key of the tenant id alone, as jobs queued before the target took
// part in the key.
func TestEnqueueUniquePerRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)
	release := func(latest int64) *queue.Queue {
		q, err := queue.New(queue.Config{Pool: pool, Latest: latest})
		require.NoError(t, err)
		return q
	}
	old, next, unversioned := release(2), release(3), release(0)

	n, err := old.Enqueue(ctx, []string{"t1", "t2"})
	require.NoError(t, err)
	require.Equal(t, 2, n)
	n, err = old.Enqueue(ctx, []string{"t1"})
	require.NoError(t, err)
	require.Zero(t, n, "one live job per tenant within a release")

	n, err = next.Enqueue(ctx, []string{"t1"})
	require.NoError(t, err)
	require.Equal(t, 1, n, "the old release's live job swallowed the new release's enqueue")
	var inTx int
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var err error
		inTx, err = next.EnqueueTx(ctx, tx, []string{"t1", "t2"})
		return err
	}))
	require.Equal(t, 1, inTx, "EnqueueTx: t2 is new for release 3, t1 already has its job")
	n, err = next.Enqueue(ctx, []string{"t1", "t2"})
	require.NoError(t, err)
	require.Zero(t, n, "one live job per tenant within a release")

	// Target 0 is left out of the key: one such job per tenant, apart from
	// the versioned ones.
	n, err = unversioned.Enqueue(ctx, []string{"t1", "t1"})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	n, err = unversioned.Enqueue(ctx, []string{"t1"})
	require.NoError(t, err)
	require.Zero(t, n)

	rows, err := pool.Query(ctx, `SELECT coalesce((args->>'target')::bigint, 0), count(*)::int FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = 't1' GROUP BY 1 ORDER BY 1`)
	require.NoError(t, err)
	type perTarget struct {
		Target int64
		Jobs   int
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[perTarget])
	require.NoError(t, err)
	require.Equal(t, []perTarget{{0, 1}, {2, 1}, {3, 1}}, got)
}
