package queue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// recordingRunner does real work: one row in runs per attempt. fail, if set,
// decides the attempt's result after the row is written.
type recordingRunner struct {
	pool *pgxpool.Pool
	fail func(ctx context.Context, tenantID string, attempt int) error
}

func (r *recordingRunner) RunTenant(ctx context.Context, tenantID string, attempt, maxAttempts int) error {
	if _, err := r.pool.Exec(ctx, "INSERT INTO runs (tenant_id, attempt, max_attempts) VALUES ($1, $2, $3)",
		tenantID, attempt, maxAttempts); err != nil {
		return err
	}
	if r.fail != nil {
		return r.fail(ctx, tenantID, attempt)
	}
	return nil
}

type jobRow struct {
	State   string
	Attempt int
	Errors  int
}

// tenantJobs lists a tenant's migrate_tenant jobs, oldest first.
func tenantJobs(t *testing.T, pool *pgxpool.Pool, tenantID string) []jobRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT state::text, attempt, coalesce(array_length(errors, 1), 0)
		FROM tenantmigrate.river_job
		WHERE kind = 'migrate_tenant' AND args->>'tenant_id' = $1
		ORDER BY id`, tenantID)
	require.NoError(t, err)
	jobs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[jobRow])
	require.NoError(t, err)
	return jobs
}

// lastJobState is the state of the tenant's newest job, or "" if none.
func lastJobState(t *testing.T, pool *pgxpool.Pool, tenantID string) string {
	t.Helper()
	jobs := tenantJobs(t, pool, tenantID)
	if len(jobs) == 0 {
		return ""
	}
	return jobs[len(jobs)-1].State
}

func runAttempts(t *testing.T, pool *pgxpool.Pool, tenantID string) []int {
	t.Helper()
	rows, err := pool.Query(context.Background(),
		"SELECT attempt FROM runs WHERE tenant_id = $1 ORDER BY attempt", tenantID)
	require.NoError(t, err)
	attempts, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return attempts
}

// startWorkers starts a working Queue on pool and stops it when the test ends.
func startWorkers(t *testing.T, cfg queue.Config) *queue.Queue {
	t.Helper()
	cfg.RunWorkers = true
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 20 * time.Millisecond
	}
	q, err := queue.New(cfg)
	require.NoError(t, err)
	require.NoError(t, q.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, q.Stop(ctx))
	})
	return q
}

func TestEnqueueUniquePerTenant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)

	// An insert-only Queue, as a CLI uses.
	ins, err := queue.New(queue.Config{Pool: pool})
	require.NoError(t, err)
	require.ErrorIs(t, ins.Start(ctx), queue.ErrInsertOnly)

	n, err := ins.Enqueue(ctx, []string{"t1", "t1"})
	require.NoError(t, err)
	require.Equal(t, 1, n, "a repeat within one call is skipped")
	n, err = ins.Enqueue(ctx, []string{"t1"})
	require.NoError(t, err)
	require.Equal(t, 0, n, "a tenant with a live job is skipped")
	require.Equal(t, []jobRow{{State: "available"}}, tenantJobs(t, pool, "t1"))

	// Work it; a completed job does not block a later enqueue.
	startWorkers(t, queue.Config{Pool: pool, Runner: &recordingRunner{pool: pool}})
	eventually(t, 10*time.Second, "job completed", func() bool { return lastJobState(t, pool, "t1") == "completed" })
	require.Equal(t, []int{1}, runAttempts(t, pool, "t1"))

	n, err = ins.Enqueue(ctx, []string{"t1"})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	eventually(t, 10*time.Second, "second job completed", func() bool {
		jobs := tenantJobs(t, pool, "t1")
		return len(jobs) == 2 && jobs[1].State == "completed"
	})
	require.Equal(t, []int{1, 1}, runAttempts(t, pool, "t1"))

	remaining, err := ins.Remaining(ctx)
	require.NoError(t, err)
	require.Zero(t, remaining)
	require.NoError(t, ins.Stop(ctx), "Stop on an insert-only Queue is a no-op")
}

// statementCounter counts the statements a pool sends.
type statementCounter struct {
	all, jobInserts atomic.Int64
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	c.all.Add(1)
	if strings.Contains(data.SQL, "INSERT INTO") && strings.Contains(data.SQL, "river_job") {
		c.jobInserts.Add(1)
	}
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func TestEnqueueBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := newControlPlane(t)

	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = fmt.Sprintf("tenant-%04d", i)
	}

	for _, tc := range []struct {
		batchSize, wantInserts int
	}{
		{batchSize: 0, wantInserts: 1}, // default 1000
		{batchSize: 400, wantInserts: 3},
	} {
		t.Run(fmt.Sprintf("batch_size_%d", tc.batchSize), func(t *testing.T) {
			counter := &statementCounter{}
			pool := newPool(t, dbURL, counter)
			q, err := queue.New(queue.Config{Pool: pool, EnqueueBatchSize: tc.batchSize})
			require.NoError(t, err)
			_, err = pool.Exec(ctx, "DELETE FROM tenantmigrate.river_job")
			require.NoError(t, err)
			counter.all.Store(0)
			counter.jobInserts.Store(0)

			n, err := q.Enqueue(ctx, ids)
			require.NoError(t, err)
			require.Equal(t, len(ids), n)
			require.Equal(t, int64(tc.wantInserts), counter.jobInserts.Load(), "one INSERT per batch")
			// Each batch is one transaction: BEGIN, the shared
			// enqueueOrderLock, INSERT, NOTIFY, COMMIT; the client's first
			// insert also asks for the server version once.
			require.LessOrEqual(t, counter.all.Load(), int64(5*tc.wantInserts+1), "statements for %d ids", len(ids))

			remaining, err := q.Remaining(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(len(ids)), remaining)

			n, err = q.Enqueue(ctx, ids)
			require.NoError(t, err)
			require.Zero(t, n, "all tenants already have a live job")
			remaining, err = q.Remaining(ctx)
			require.NoError(t, err)
			require.Equal(t, int64(len(ids)), remaining)
		})
	}
}

var errTransient = errors.New("transient: connection reset")

func TestRetryableErrorIsRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)

	q := startWorkers(t, queue.Config{
		Pool: pool,
		Runner: &recordingRunner{pool: pool, fail: func(_ context.Context, _ string, attempt int) error {
			if attempt < 3 {
				return fmt.Errorf("attempt %d: %w", attempt, errTransient)
			}
			return nil
		}},
		IsRetryable:  func(err error) bool { return errors.Is(err, errTransient) },
		RetryBackoff: time.Millisecond,
	})
	_, err := q.Enqueue(ctx, []string{"flaky"})
	require.NoError(t, err)

	eventually(t, 15*time.Second, "job completed", func() bool { return lastJobState(t, pool, "flaky") == "completed" })
	require.Equal(t, []jobRow{{State: "completed", Attempt: 3, Errors: 2}}, tenantJobs(t, pool, "flaky"))
	require.Equal(t, []int{1, 2, 3}, runAttempts(t, pool, "flaky"))
	var maxAttempts int
	require.NoError(t, pool.QueryRow(ctx, "SELECT max(max_attempts) FROM runs").Scan(&maxAttempts))
	require.Equal(t, queue.DefaultMaxAttempts, maxAttempts)
}

func TestNonRetryableErrorCancelsJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)

	q := startWorkers(t, queue.Config{
		Pool: pool,
		Runner: &recordingRunner{pool: pool, fail: func(context.Context, string, int) error {
			return errors.New("syntax error in migration 7")
		}},
		IsRetryable:  func(error) bool { return false },
		RetryBackoff: time.Millisecond,
	})
	_, err := q.Enqueue(ctx, []string{"broken"})
	require.NoError(t, err)

	eventually(t, 10*time.Second, "job finalized", func() bool { return lastJobState(t, pool, "broken") == "cancelled" })
	require.Equal(t, []jobRow{{State: "cancelled", Attempt: 1, Errors: 1}}, tenantJobs(t, pool, "broken"))
	require.Equal(t, []int{1}, runAttempts(t, pool, "broken"))
}

// A job cancelled by a stop at its deadline is not cancelled for good,
// whatever IsRetryable says about context errors: the Runner sees the
// shutdown cause, and the job goes back to available, its attempt not used,
// for another instance, which works it as its first attempt.
func TestStopReturnsInterruptedJobsToQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)

	started := make(chan struct{})
	var interrupted atomic.Bool
	cfg := queue.Config{
		Pool:       pool,
		RunWorkers: true,
		Runner: &recordingRunner{pool: pool, fail: func(ctx context.Context, _ string, _ int) error {
			close(started)
			<-ctx.Done()
			interrupted.Store(queue.Interrupted(ctx))
			return fmt.Errorf("migrate: %w", ctx.Err())
		}},
		IsRetryable:  func(error) bool { return false },
		PollInterval: 20 * time.Millisecond,
	}
	q, err := queue.New(cfg)
	require.NoError(t, err)
	require.NoError(t, q.Start(ctx))
	_, err = q.Enqueue(ctx, []string{"slow"})
	require.NoError(t, err)
	<-started

	stopCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, q.Stop(stopCtx), context.DeadlineExceeded)
	require.NoError(t, q.Stop(ctx), "second Stop is a no-op")
	require.True(t, interrupted.Load(), "the Runner saw queue.Interrupted")

	require.Equal(t, []jobRow{{State: "available", Attempt: 0, Errors: 0}}, tenantJobs(t, pool, "slow"))
	remaining, err := q.Remaining(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(1), remaining)

	// Another instance works it: attempt 1 again.
	cfg.Runner = &recordingRunner{pool: pool}
	startWorkers(t, cfg)
	eventually(t, 10*time.Second, "requeued job completed", func() bool { return lastJobState(t, pool, "slow") == "completed" })
	require.Equal(t, []jobRow{{State: "completed", Attempt: 1, Errors: 0}}, tenantJobs(t, pool, "slow"))
	require.Equal(t, []int{1, 1}, runAttempts(t, pool, "slow"))
}

// The jobs of a Queue outlive the context Start was given (a signal's, in
// serve): cancelling it cancels no job, and a graceful Stop lets the running
// one finish. Start and Stop are idempotent, and a stopped Queue starts again.
func TestQueueStartStopContract(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t, newControlPlane(t), nil)

	release := make(chan struct{})
	var sawCancel atomic.Bool
	q, err := queue.New(queue.Config{
		Pool:       pool,
		RunWorkers: true,
		Runner: &recordingRunner{pool: pool, fail: func(ctx context.Context, tenantID string, _ int) error {
			if tenantID == "held" {
				select {
				case <-release:
				case <-ctx.Done():
					sawCancel.Store(true)
					return ctx.Err()
				}
			}
			return nil
		}},
		PollInterval: 20 * time.Millisecond,
	})
	require.NoError(t, err)
	require.NoError(t, q.Stop(ctx), "Stop before Start")

	startCtx, cancelStart := context.WithCancel(ctx)
	require.NoError(t, q.Start(startCtx))
	require.NoError(t, q.Start(startCtx), "second Start")
	_, err = q.Enqueue(ctx, []string{"held"})
	require.NoError(t, err)
	eventually(t, 10*time.Second, "job running", func() bool { return lastJobState(t, pool, "held") == "running" })
	cancelStart() // what SIGTERM did to serve's jobs

	stopped := make(chan error, 1)
	go func() { stopped <- q.Stop(ctx) }()
	eventually(t, 10*time.Second, "the Runner still running", func() bool {
		return len(runAttempts(t, pool, "held")) == 1 && !sawCancel.Load()
	})
	close(release)
	require.NoError(t, <-stopped)
	require.False(t, sawCancel.Load(), "the running job was not cancelled")
	require.Equal(t, []jobRow{{State: "completed", Attempt: 1}}, tenantJobs(t, pool, "held"))
	require.NoError(t, q.Stop(ctx), "second Stop")

	// Started again, it works new jobs.
	require.NoError(t, q.Start(ctx))
	t.Cleanup(func() { require.NoError(t, q.Stop(ctx)) })
	_, err = q.Enqueue(ctx, []string{"after-restart"})
	require.NoError(t, err)
	eventually(t, 10*time.Second, "job after restart completed", func() bool {
		return lastJobState(t, pool, "after-restart") == "completed"
	})
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := queue.New(queue.Config{})
	require.ErrorContains(t, err, "Pool is required")

	pool, err := pgxpool.New(context.Background(), "postgres://127.0.0.1:1/none") // never connects
	require.NoError(t, err)
	defer pool.Close()
	_, err = queue.New(queue.Config{Pool: pool, RunWorkers: true})
	require.ErrorContains(t, err, "Runner is required")
	_, err = queue.New(queue.Config{Pool: pool, JobTimeout: time.Minute, RescueAfter: time.Second})
	require.ErrorContains(t, err, "RescueAfter")
}
