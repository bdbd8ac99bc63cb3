package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// KindRollbackTenant rolls one tenant back: it runs the Down sections of
// its versions above a version.
const KindRollbackTenant = "rollback_tenant"

// RollbackTenantArgs are the arguments of a rollback_tenant job.
type RollbackTenantArgs struct {
	TenantID string `json:"tenant_id"`
	// To is the version the tenant goes back to.
	To int64 `json:"to"`
	// RollbackID names the rollback the job belongs to (RollbackProgress).
	RollbackID string `json:"rollback_id"`
	// Latest is the latest version of the release that queued the job
	// (Config.Latest; 0 for jobs of a build before this field). Only a job
	// of a newer release is put back for it; one of this release (or an
	// older one) of a tenant above Latest has no instance to run it.
	Latest int64 `json:"latest,omitempty"`
}

// Kind returns KindRollbackTenant.
func (RollbackTenantArgs) Kind() string { return KindRollbackTenant }

// RollbackRunner performs rollback_tenant jobs. A Config.Runner that also
// implements it gets the job kind registered; the root package's does.
type RollbackRunner interface {
	// RollbackTenant performs one attempt of rolling tenantID back to
	// version to, and records the result.
	RollbackTenant(ctx context.Context, tenantID string, to int64, attempt, maxAttempts int) error
}

// rollbackWorker works rollback_tenant jobs.
type rollbackWorker struct {
	river.WorkerDefaults[RollbackTenantArgs]
	runner      RollbackRunner
	isRetryable func(error) bool
	after       *afterSnooze
	snooze      time.Duration // Config.NewerReleaseSnooze
	latest      int64         // Config.Latest
}

// ErrNewerRelease is wrapped by a RollbackRunner's error when the tenant is
// recorded above this instance's latest version (a newer release's tenant,
// in a rolling deploy): the job is put back for an instance of that
// release, using no attempt, as a migrate_tenant job aimed above Latest.
var ErrNewerRelease = errors.New("the tenant is at a version above this release's")

// Work runs one attempt, as tenantWorker.Work does for migrations.
func (w *rollbackWorker) Work(ctx context.Context, job *river.Job[RollbackTenantArgs]) error {
	err := w.runner.RollbackTenant(ctx, job.Args.TenantID, job.Args.To, job.Attempt, job.MaxAttempts)
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNewerRelease) && job.Args.Latest > w.latest {
		return snoozeNewer(w.snooze)
	}
	if we := (*WaitError)(nil); errors.As(err, &we) {
		w.after.add(job.ID, we.AfterSnooze)
		return river.JobSnooze(we.Delay) // its server is full or DOWN: no attempt
	}
	if Interrupted(ctx) {
		return river.JobSnooze(0)
	}
	if ctx.Err() == nil && w.isRetryable != nil && !w.isRetryable(err) {
		return river.JobCancel(err)
	}
	return err
}

// addRollbackWorker registers the rollback_tenant worker when runner
// implements RollbackRunner.
func addRollbackWorker(workers *river.Workers, runner Runner, isRetryable func(error) bool, after *afterSnooze, snooze time.Duration, latest int64) error {
	rr, ok := runner.(RollbackRunner)
	if !ok {
		return nil
	}
	if err := river.AddWorkerSafely(workers, &rollbackWorker{runner: rr, isRetryable: isRetryable, after: after, snooze: snooze, latest: latest}); err != nil {
		return fmt.Errorf("queue: register %s worker: %w", KindRollbackTenant, err)
	}
	return nil
}

// EnqueueRollback inserts a rollback_tenant job per tenant of ids, in
// batches, for rollback id, and returns how many it inserted.
func (q *Queue) EnqueueRollback(ctx context.Context, id string, to int64, ids []string) (int, error) {
	inserted := 0
	for chunk := range slices.Chunk(ids, q.cfg.EnqueueBatchSize) {
		params := make([]river.InsertManyParams, len(chunk))
		for i, tid := range chunk {
			params[i] = river.InsertManyParams{Args: RollbackTenantArgs{TenantID: tid, To: to, RollbackID: id, Latest: q.cfg.Latest}, InsertOpts: q.insertOpts}
		}
		if _, err := q.client.InsertMany(ctx, params); err != nil {
			return inserted, fmt.Errorf("enqueue rollback of %d tenants (%d inserted before): %w", len(ids), inserted, err)
		}
		inserted += len(chunk)
	}
	return inserted, nil
}

// RollbackJobs counts the jobs of rollback id by state, and returns the
// version they go back to (-1 when the rollback has no job: unknown, or its
// jobs were removed by River's cleaner, a day after they finished).
func (q *Queue) RollbackJobs(ctx context.Context, id string) (to int64, byState map[rivertype.JobState]int64, err error) {
	rows, err := q.cfg.Pool.Query(ctx, "SELECT state, max((args->>'to')::bigint), count(*) FROM "+
		pgx.Identifier{Schema, "river_job"}.Sanitize()+
		" WHERE kind = $1 AND args->>'rollback_id' = $2 GROUP BY state", KindRollbackTenant, id)
	if err != nil {
		return -1, nil, fmt.Errorf("read rollback %s: %w", id, err)
	}
	defer rows.Close()
	to, byState = -1, map[rivertype.JobState]int64{}
	for rows.Next() {
		var (
			state string
			v, n  int64
		)
		if err := rows.Scan(&state, &v, &n); err != nil {
			return -1, nil, fmt.Errorf("read rollback %s: %w", id, err)
		}
		to = v
		byState[rivertype.JobState(state)] = n
	}
	if err := rows.Err(); err != nil {
		return -1, nil, fmt.Errorf("read rollback %s: %w", id, err)
	}
	return to, byState, nil
}
