package queue_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// TestWakeNotifiesProducers: a job that waits an hour and is woken runs at
// once, though the workers poll only every 10 minutes: Wake makes it
// available and notifies the producers, as an insert does. Waking a job that
// has finished meanwhile leaves it finished (no second run).
func TestWakeNotifiesProducers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)
	q := startWorkers(t, queue.Config{Pool: pool, Runner: &recordingRunner{pool: pool}, PollInterval: 10 * time.Minute})

	res, err := q.Client().Insert(ctx, queue.MigrateTenantArgs{TenantID: "t1"},
		&river.InsertOpts{ScheduledAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	require.Equal(t, []jobRow{{State: "scheduled"}}, tenantJobs(t, pool, "t1"))

	require.NoError(t, q.Wake(ctx, []int64{res.Job.ID}))
	// Far below the poll interval: only a notification can have fetched it.
	eventually(t, 30*time.Second, "woken job completed", func() bool { return lastJobState(t, pool, "t1") == "completed" })
	require.Equal(t, []int{1}, runAttempts(t, pool, "t1"))

	// River's JobRetry alone would make a finished job available again.
	require.NoError(t, q.Wake(ctx, []int64{res.Job.ID, 1 << 40}))
	require.Equal(t, []jobRow{{State: "completed", Attempt: 1}}, tenantJobs(t, pool, "t1"))
	require.Equal(t, []int{1}, runAttempts(t, pool, "t1"))
}

// TestWakeNotifiesForAvailableJob: a job whose short snooze has ended is
// available, but no producer fetches it before its next poll (River is
// told of inserts, not of a time that comes). Waking it leaves it as it is
// and notifies the producers: it runs at once, far below the poll interval.
func TestWakeNotifiesForAvailableJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)
	q := startWorkers(t, queue.Config{Pool: pool, Runner: &recordingRunner{pool: pool}, PollInterval: 10 * time.Minute})

	res, err := q.Client().Insert(ctx, queue.MigrateTenantArgs{TenantID: "t1"},
		&river.InsertOpts{ScheduledAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	// A job inserted after it and run: the producer has answered both
	// inserts' notifications, and fetches next at its poll (it fetched
	// fewer jobs than it has workers).
	_, err = q.Client().Insert(ctx, queue.MigrateTenantArgs{TenantID: "t0"}, nil)
	require.NoError(t, err)
	eventually(t, 30*time.Second, "t0 completed", func() bool { return lastJobState(t, pool, "t0") == "completed" })
	// What a snooze shorter than River's scheduler interval leaves once its
	// time has passed; an UPDATE notifies no producer.
	_, err = pool.Exec(ctx, `UPDATE `+queue.Schema+`.river_job SET state = 'available', scheduled_at = now() - interval '1 second' WHERE id = $1`, res.Job.ID)
	require.NoError(t, err)

	require.NoError(t, q.Wake(ctx, []int64{res.Job.ID}))
	eventually(t, 30*time.Second, "woken job completed", func() bool { return lastJobState(t, pool, "t1") == "completed" })
	require.Equal(t, []int{1}, runAttempts(t, pool, "t1"))
}

// TestAfterSnoozeRunsOnceSnoozeIsRecorded: a job whose Runner asks it to
// wait with WaitError.AfterSnooze has AfterSnooze called on its process
// once River has recorded the snooze, not while the job still shows as
// running: whatever AfterSnooze reads of the queue (the server's waiting
// jobs) includes the job, waiting for its time. The job then runs again
// when woken, with no attempt used by the wait.
func TestAfterSnoozeRunsOnceSnoozeIsRecorded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)
	seen := make(chan string, 1)
	runner := &recordingRunner{pool: pool}
	var runs atomic.Int32
	runner.fail = func(context.Context, string, int) error {
		if runs.Add(1) > 1 {
			return nil
		}
		return &queue.WaitError{Delay: time.Hour, Err: errors.New("server full"), AfterSnooze: func(ctx context.Context) {
			var state string
			err := pool.QueryRow(ctx, `SELECT state::text FROM `+queue.Schema+`.river_job WHERE args->>'tenant_id' = 't1'`).Scan(&state)
			if err != nil {
				state = err.Error()
			}
			seen <- state
		}}
	}
	q := startWorkers(t, queue.Config{Pool: pool, Runner: runner})

	_, err := q.Enqueue(ctx, []string{"t1"})
	require.NoError(t, err)
	select {
	case state := <-seen:
		require.Equal(t, "scheduled", state, "AfterSnooze ran before River recorded the snooze")
	case <-time.After(30 * time.Second):
		t.Fatal("AfterSnooze not called")
	}
	var id int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT id FROM `+queue.Schema+`.river_job WHERE args->>'tenant_id' = 't1'`).Scan(&id))
	require.NoError(t, q.Wake(ctx, []int64{id}))
	eventually(t, 30*time.Second, "woken job completed", func() bool { return lastJobState(t, pool, "t1") == "completed" })
	require.Equal(t, []jobRow{{State: "completed", Attempt: 1}}, tenantJobs(t, pool, "t1"))
}
