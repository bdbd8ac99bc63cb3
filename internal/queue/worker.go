package queue

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/riverqueue/river"
)

// Runner performs migrate_tenant jobs. The root package implements it.
type Runner interface {
	// RunTenant performs one attempt: re-reads the tenant (early check: finish
	// at once if already at latest or deleted), migrates, records status
	// (FAILED while retries remain, FAILED_STALE on the last attempt or a
	// non-retryable error). attempt counts from 1 up to maxAttempts.
	RunTenant(ctx context.Context, tenantID string, attempt, maxAttempts int) error
}

// FleetScanFunc runs one fleet scan: it enqueues a migrate_tenant job for
// every tenant behind latest (the version of the release that queued the
// scan; 0 when unknown: the running instance's own), FAILED_STALE ones too
// with includeStale, and returns how many it queued.
type FleetScanFunc func(ctx context.Context, latest int64, includeStale bool) (scheduled int, err error)

// WaitError is returned by a Runner whose job must wait for something
// outside the tenant (its database server is full or down): the job goes
// back to the queue for Delay, as a snooze, using no attempt and holding no
// worker while it waits.
type WaitError struct {
	Delay time.Duration
	Err   error
	// AfterSnooze, when set, is called on this process once River has
	// recorded the job's snooze: for a job whose server was full, a slot
	// released between the run's look and that record woke nothing, and
	// AfterSnooze looks again. Runs one at a time, after Work returned.
	AfterSnooze func(ctx context.Context)
}

func (e *WaitError) Error() string { return "wait: " + e.Err.Error() }

func (e *WaitError) Unwrap() error { return e.Err }

// tenantWorker works migrate_tenant jobs by calling the Runner.
type tenantWorker struct {
	river.WorkerDefaults[MigrateTenantArgs]

	runner      Runner
	isRetryable func(error) bool
	after       *afterSnooze
	latest      int64         // Config.Latest
	snooze      time.Duration // Config.NewerReleaseSnooze
}

// DefaultNewerReleaseSnooze is the default of Config.NewerReleaseSnooze.
const DefaultNewerReleaseSnooze = 30 * time.Second

// snoozeNewer puts back a job aimed at a version this instance lacks, with
// jitter so that old instances do not fetch a new release's jobs in step.
func snoozeNewer(d time.Duration) error {
	return river.JobSnooze(d/2 + rand.N(d/2+1))
}

// Work runs one attempt. A non-retryable error cancels the job so that the
// remaining attempts are not spent on an error that will not go away; the
// Runner has already recorded FAILED_STALE in that case.
//
// A job that Stop interrupted at its deadline (cause ErrShutdown) is
// snoozed for no time: River v0.51.2 puts a snoozed job back to available
// with its attempt count restored, so the attempt does not count against
// MaxAttempts, and records no error; the Runner has recorded nothing. (River
// would do the same for an error after its own StopAndCancel, but only for
// its internal cause; snoozing is its documented way, whatever the cause.)
// Any other error that comes with the job's context being done (the job
// timeout) is returned as is and retried as an attempt.
func (w *tenantWorker) Work(ctx context.Context, job *river.Job[MigrateTenantArgs]) error {
	if job.Args.Target > w.latest {
		return snoozeNewer(w.snooze)
	}
	err := w.runner.RunTenant(ctx, job.Args.TenantID, job.Attempt, job.MaxAttempts)
	if err == nil {
		return nil
	}
	if we := (*WaitError)(nil); errors.As(err, &we) {
		w.after.add(job.ID, we.AfterSnooze)
		return river.JobSnooze(we.Delay)
	}
	if Interrupted(ctx) {
		return river.JobSnooze(0)
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if w.isRetryable != nil && !w.isRetryable(err) {
		return river.JobCancel(err)
	}
	return err
}

// Interrupted reports whether ctx, a job's context, was cancelled by Stop at
// its deadline (cause ErrShutdown) rather than by the job's timeout.
func Interrupted(ctx context.Context) bool {
	return ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrShutdown)
}

// fleetScanWorker works fleet_scan jobs.
type fleetScanWorker struct {
	river.WorkerDefaults[FleetScanArgs]

	scan   FleetScanFunc
	latest int64
	snooze time.Duration
}

// Work runs the scan. A failed scan is retried like any job; enqueueing is
// idempotent (migrate_tenant jobs are unique per tenant and target), so a
// retry only adds the tenants the failed attempt did not reach. A scan interrupted by
// Stop goes back to the queue without using an attempt, as in
// tenantWorker.Work.
func (w *fleetScanWorker) Work(ctx context.Context, job *river.Job[FleetScanArgs]) error {
	if job.Args.Latest > w.latest {
		// A newer release's scan: its jobs must be aimed at its version,
		// which this instance's source lacks. Left to that release.
		return snoozeNewer(w.snooze)
	}
	_, err := w.scan(ctx, job.Args.Latest, job.Args.IncludeStale)
	if err != nil && Interrupted(ctx) {
		return river.JobSnooze(0)
	}
	return err
}
