package queue_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// TestEnqueueTxKeepsOrder: EnqueueTx inserts the jobs in the order of its
// ids, a repeat left out, and River fetches them in that order (their ids
// follow it, their scheduled time is the same): a rollout's batch with its
// servers taking turns is fetched that way.
func TestEnqueueTxKeepsOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)
	ins, err := queue.New(queue.Config{Pool: pool})
	require.NoError(t, err)

	order := []string{"a-01", "b-01", "c-01", "a-02", "b-02", "a-01", "a-03"}
	var n int
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		n, err = ins.EnqueueTx(ctx, tx, order)
		return err
	}))
	require.Equal(t, 6, n)
	rows, err := pool.Query(ctx, `SELECT args->>'tenant_id' FROM `+queue.Schema+`.river_job
		WHERE kind = 'migrate_tenant' ORDER BY priority, scheduled_at, id`) // River's fetch order
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"a-01", "b-01", "c-01", "a-02", "b-02", "a-03"}, got)
}

// TestEnqueueOrdersDoNotDeadlock: EnqueueTx batches in the caller's order
// and Enqueue's sorted ones, with tenants in common and in opposite orders,
// all succeed (enqueueOrderLock): without the lock, two such inserts can
// each wait for the other's unique-index entry until PostgreSQL aborts one.
// Each tenant gets one live job.
func TestEnqueueOrdersDoNotDeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)
	ins, err := queue.New(queue.Config{Pool: pool})
	require.NoError(t, err)

	var ids []string
	for i := range 200 {
		ids = append(ids, fmt.Sprintf("t-%03d", i))
	}
	reversed := slices.Clone(ids)
	slices.Reverse(reversed)
	var g errgroup.Group
	for i := range 8 {
		g.Go(func() error {
			if i%2 == 0 {
				_, err := ins.Enqueue(ctx, ids)
				return err
			}
			return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := ins.EnqueueTx(ctx, tx, reversed)
				return err
			})
		})
	}
	require.NoError(t, g.Wait())
	remaining, err := ins.Remaining(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(len(ids)), remaining)
}
