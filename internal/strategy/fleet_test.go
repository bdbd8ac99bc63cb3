package strategy_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/strategy"
)

const latest = 5

// Three instances, each with its own pool and River client, start together:
// one fleet scan runs, and each tenant gets one job.
func TestFleetScansOnceWhenInstancesStartTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := newControlPlane(t)
	db := newPool(t, dbURL)
	tenants := insertTenants(t, db, "t", 150, nil, "")

	const instances = 3
	scanners := make([]*countingScanner, instances)
	queues := make([]*queue.Queue, instances)
	for i := range instances {
		pool := newPool(t, dbURL)
		scanners[i] = &countingScanner{Scanner: controlplane.NewStore(pool, nil)}
		var q *queue.Queue
		fleet := strategy.NewFleet(strategy.FleetConfig{
			Scanner:  scanners[i],
			Enqueue:  func(ctx context.Context, ids []string) (int, error) { return q.Enqueue(ctx, ids) },
			Latest:   latest,
			PageSize: 40,
		})
		var err error
		q, err = queue.New(queue.Config{
			Pool:              pool,
			RunWorkers:        true,
			Runner:            runsRunner{pool: pool},
			FleetScan:         fleet.ScanAt,
			ScheduleFleetScan: true,
			Latest:            latest,
			PollInterval:      50 * time.Millisecond,
		})
		require.NoError(t, err)
		queues[i] = q
	}

	var wg sync.WaitGroup
	startErrs := make([]error, instances)
	for i, q := range queues {
		wg.Go(func() { startErrs[i] = q.Start(ctx) })
		t.Cleanup(func() {
			stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, q.Stop(stopCtx))
		})
	}
	wg.Wait()
	for _, err := range startErrs {
		require.NoError(t, err)
	}

	eventually(t, 20*time.Second, "every tenant migrated", func() bool {
		return count(t, db, "SELECT count(DISTINCT tenant_id) FROM runs") == len(tenants)
	})
	eventually(t, 5*time.Second, "fleet_scan job completed", func() bool {
		return count(t, db, "SELECT count(*) FROM tenantmigrate.river_job WHERE kind = 'fleet_scan' AND state = 'completed'") == 1
	})

	firstPages := 0
	for _, s := range scanners {
		_, n := s.counts()
		firstPages += n
	}
	require.Equal(t, 1, firstPages, "scans started across instances")
	require.Equal(t, 1, count(t, db, "SELECT count(*) FROM tenantmigrate.river_job WHERE kind = 'fleet_scan'"))
	require.Equal(t, tenants, queuedTenants(t, db), "one job per tenant")
	require.Equal(t, len(tenants), count(t, db, "SELECT count(*) FROM runs"), "one run per tenant")
}

func TestFleetScanNow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t))
	behind := insertTenants(t, pool, "new", 100, nil, "")
	failed := insertTenants(t, pool, "failed", 5, ptr[int64](2), "FAILED")
	stale := insertTenants(t, pool, "stale", 10, ptr[int64](3), "FAILED_STALE")
	insertTenants(t, pool, "done", 10, ptr[int64](latest), "COMPLETED")

	q, err := queue.New(queue.Config{Pool: pool}) // insert-only: nothing runs the jobs
	require.NoError(t, err)
	scanner := &countingScanner{Scanner: controlplane.NewStore(pool, nil)}
	fleet := strategy.NewFleet(strategy.FleetConfig{Scanner: scanner, Enqueue: q.Enqueue, Latest: latest, PageSize: 30})

	n, err := fleet.ScanNow(ctx, false)
	require.NoError(t, err)
	require.Equal(t, 105, n)
	require.Equal(t, append(append([]string{}, failed...), behind...), queuedTenants(t, pool), "FAILED_STALE and up-to-date tenants left out")
	calls, _ := scanner.counts()
	require.Equal(t, 4, calls, "105 tenants in pages of 30")

	n, err = fleet.ScanNow(ctx, false)
	require.NoError(t, err)
	require.Zero(t, n, "tenants with a live job are not queued again")

	n, err = fleet.ScanNow(ctx, true)
	require.NoError(t, err)
	require.Equal(t, len(stale), n, "includeStale adds the FAILED_STALE tenants")
	remaining, err := q.Remaining(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(115), remaining)
}

// Pages are enqueued EnqueueConcurrency at a time: the first two Enqueue calls
// are both in flight before either returns.
func TestFleetScanEnqueuesPagesConcurrently(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t))
	behind := insertTenants(t, pool, "new", 90, nil, "")
	q, err := queue.New(queue.Config{Pool: pool})
	require.NoError(t, err)

	var inFlight, maxInFlight atomic.Int32
	bothIn := make(chan struct{})
	var once sync.Once
	enqueue := func(ctx context.Context, ids []string) (int, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if n <= m || maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		if n == 2 {
			once.Do(func() { close(bothIn) })
		}
		// The first call waits (with a deadline) for a second one to start.
		select {
		case <-bothIn:
		case <-time.After(10 * time.Second):
			return 0, errors.New("no second Enqueue call started while the first was in flight")
		}
		return q.Enqueue(ctx, ids)
	}
	fleet := strategy.NewFleet(strategy.FleetConfig{Scanner: controlplane.NewStore(pool, nil), Enqueue: enqueue, Latest: latest, PageSize: 30})
	n, err := fleet.ScanNow(ctx, false)
	require.NoError(t, err)
	require.Equal(t, len(behind), n)
	require.Equal(t, int32(strategy.DefaultEnqueueConcurrency), maxInFlight.Load())
	require.Equal(t, behind, queuedTenants(t, pool))
}

// A page that fails to enqueue stops the scan; the count it returns is what
// was really queued, and a second scan queues the rest, once each.
func TestFleetScanEnqueueErrorCountsWhatWasQueued(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t))
	behind := insertTenants(t, pool, "new", 200, nil, "")
	q, err := queue.New(queue.Config{Pool: pool})
	require.NoError(t, err)

	var calls atomic.Int32
	failing := func(ctx context.Context, ids []string) (int, error) {
		if calls.Add(1) == 3 {
			return 0, errors.New("control plane went away")
		}
		return q.Enqueue(ctx, ids)
	}
	fleet := strategy.NewFleet(strategy.FleetConfig{Scanner: controlplane.NewStore(pool, nil), Enqueue: failing, Latest: latest, PageSize: 20})
	n, err := fleet.ScanNow(ctx, false)
	require.ErrorContains(t, err, "control plane went away")
	require.Len(t, queuedTenants(t, pool), n, "the count is what is in the queue")
	require.Less(t, n, len(behind))

	fleet = strategy.NewFleet(strategy.FleetConfig{Scanner: controlplane.NewStore(pool, nil), Enqueue: q.Enqueue, Latest: latest, PageSize: 20})
	rest, err := fleet.ScanNow(ctx, false)
	require.NoError(t, err)
	require.Equal(t, len(behind), n+rest)
	require.Equal(t, behind, queuedTenants(t, pool))
}
