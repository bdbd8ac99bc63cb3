package strategy_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/strategy"
)

// recordingEnqueue wraps a real Enqueue, recording each call's batch size,
// and fails while broken is set (standing in for an unreachable database).
type recordingEnqueue struct {
	next    strategy.EnqueueFunc
	broken  atomic.Bool
	failed  atomic.Int64
	mu      sync.Mutex
	batches []int
}

func (r *recordingEnqueue) Enqueue(ctx context.Context, ids []string) (int, error) {
	if r.broken.Load() {
		r.failed.Add(1)
		return 0, errors.New("connection refused")
	}
	n, err := r.next(ctx, ids)
	if err == nil {
		r.mu.Lock()
		r.batches = append(r.batches, len(ids))
		r.mu.Unlock()
	}
	return n, err
}

func (r *recordingEnqueue) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches)
}

func sum(xs []int) int {
	total := 0
	for _, x := range xs {
		total += x
	}
	return total
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// newInsertOnlyQueue returns an insert-only Queue on a fresh control plane.
func newInsertOnlyQueue(t *testing.T) *queue.Queue {
	t.Helper()
	q, err := queue.New(queue.Config{Pool: newPool(t, newControlPlane(t))})
	require.NoError(t, err)
	return q
}

func TestCollectorBatchesAndFlushesOnStop(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newInsertOnlyQueue(t)
	rec := &recordingEnqueue{next: q.Enqueue}
	c := strategy.NewCollector(strategy.CollectorConfig{Enqueue: rec.Enqueue, Interval: time.Hour, BatchSize: 200})
	tenants := ids("t", 450)
	for _, id := range tenants[:150] {
		c.Add(id)
		c.Add(id)
	}
	require.Equal(t, 150, c.Len(), "a tenant is held once")

	require.NoError(t, c.Start(ctx))
	for _, id := range tenants[150:] {
		c.Add(id)
	}
	eventually(t, 10*time.Second, "two full batches queued", func() bool { return sum(rec.sizes()) == 400 })
	require.Equal(t, []int{200, 200}, rec.sizes())
	require.Equal(t, 50, c.Len())

	require.NoError(t, c.Stop(ctx))
	require.Equal(t, []int{200, 200, 50}, rec.sizes(), "Stop flushes the rest")
	require.Zero(t, c.Len())
	remaining, err := q.Remaining(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(len(tenants)), remaining)

	require.NoError(t, c.Stop(ctx), "second Stop")
	require.Len(t, rec.sizes(), 3)
}

func TestCollectorFlushesEveryInterval(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newInsertOnlyQueue(t)
	c := strategy.NewCollector(strategy.CollectorConfig{Enqueue: q.Enqueue, Interval: 50 * time.Millisecond})
	require.NoError(t, c.Start(ctx))
	t.Cleanup(func() { require.NoError(t, c.Stop(ctx)) })

	for _, id := range ids("t", 10) {
		c.Add(id)
	}
	eventually(t, 10*time.Second, "tenants queued without a full batch", func() bool {
		n, err := q.Remaining(ctx)
		require.NoError(t, err)
		return n == 10
	})
	require.Zero(t, c.Len())
}

func TestCollectorKeepsTenantsWhenEnqueueFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newInsertOnlyQueue(t)
	rec := &recordingEnqueue{next: q.Enqueue}
	rec.broken.Store(true)
	c := strategy.NewCollector(strategy.CollectorConfig{Enqueue: rec.Enqueue, Interval: time.Hour, BatchSize: 5})
	require.NoError(t, c.Start(ctx))

	tenants := ids("t", 5)
	for _, id := range tenants {
		c.Add(id)
	}
	eventually(t, 10*time.Second, "a failed flush", func() bool { return rec.failed.Load() == 1 })
	require.Equal(t, 5, c.Len(), "a failed batch goes back to the set")

	require.Error(t, c.Stop(ctx), "Stop reports tenants it could not queue")
	require.Equal(t, 5, c.Len())

	rec.broken.Store(false)
	require.NoError(t, c.Stop(ctx), "Stop again retries the flush")
	require.Zero(t, c.Len())
	remaining, err := q.Remaining(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(len(tenants)), remaining)
}

func TestCollectorStopWithoutStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newInsertOnlyQueue(t)
	c := strategy.NewCollector(strategy.CollectorConfig{Enqueue: q.Enqueue})
	c.Add("late")
	require.NoError(t, c.Stop(ctx))
	remaining, err := q.Remaining(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), remaining)
}

// The flusher outlives the context Start was given (serve's signal
// context), and Stop queues what is held even when the caller's time is up:
// serve stops the collector with whatever is left of its shutdown timeout.
func TestCollectorOutlivesStartContextAndFlushesAfterDeadline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := newInsertOnlyQueue(t)
	c := strategy.NewCollector(strategy.CollectorConfig{Enqueue: q.Enqueue, Interval: 20 * time.Millisecond})
	startCtx, cancelStart := context.WithCancel(ctx)
	require.NoError(t, c.Start(startCtx))
	require.NoError(t, c.Start(startCtx), "second Start")
	cancelStart()

	c.Add("after-cancel")
	eventually(t, 10*time.Second, "flushed on the interval after Start's ctx ended", func() bool {
		n, err := q.Remaining(ctx)
		require.NoError(t, err)
		return n == 1
	})

	require.NoError(t, c.Stop(ctx))
	require.NoError(t, c.Start(ctx), "a stopped Collector starts again")
	require.NoError(t, c.Stop(ctx))

	// No interval comes before Stop; its ctx has ended already.
	late := strategy.NewCollector(strategy.CollectorConfig{Enqueue: q.Enqueue, Interval: time.Hour})
	require.NoError(t, late.Start(ctx))
	late.Add("at-stop")
	expired, cancel := context.WithCancel(ctx)
	cancel()
	require.NoError(t, late.Stop(expired))
	require.Zero(t, late.Len())
	remaining, err := q.Remaining(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(2), remaining, "flushed on Stop with an expired ctx")
}
