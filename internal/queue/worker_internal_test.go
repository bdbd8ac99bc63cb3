package queue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"
)

type funcRunner func(ctx context.Context, tenantID string, attempt, maxAttempts int) error

func (f funcRunner) RunTenant(ctx context.Context, tenantID string, attempt, maxAttempts int) error {
	return f(ctx, tenantID, attempt, maxAttempts)
}

func TestTenantWorkerClassifiesErrors(t *testing.T) {
	t.Parallel()
	errPermanent := errors.New("permanent")
	errTransient := errors.New("transient")
	isRetryable := func(err error) bool { return errors.Is(err, errTransient) }
	job := &river.Job[MigrateTenantArgs]{
		JobRow: &rivertype.JobRow{Attempt: 2, MaxAttempts: 3},
		Args:   MigrateTenantArgs{TenantID: "acme"},
	}

	var got struct {
		id               string
		attempt, maxAtts int
	}
	work := func(ctx context.Context, runErr error, isRetryable func(error) bool) error {
		w := &tenantWorker{
			runner: funcRunner(func(_ context.Context, id string, attempt, maxAttempts int) error {
				got.id, got.attempt, got.maxAtts = id, attempt, maxAttempts
				return runErr
			}),
			isRetryable: isRetryable,
		}
		return w.Work(ctx, job)
	}

	require.NoError(t, work(context.Background(), nil, isRetryable))
	require.Equal(t, "acme", got.id)
	require.Equal(t, 2, got.attempt)
	require.Equal(t, 3, got.maxAtts)

	var cancelErr *river.JobCancelError
	err := work(context.Background(), errPermanent, isRetryable)
	require.ErrorAs(t, err, &cancelErr, "non-retryable error cancels the job")
	require.ErrorIs(t, err, errPermanent)

	err = work(context.Background(), errTransient, isRetryable)
	require.ErrorIs(t, err, errTransient)
	require.NotErrorAs(t, err, &cancelErr, "retryable error is retried")

	err = work(context.Background(), errPermanent, nil)
	require.NotErrorAs(t, err, &cancelErr, "without IsRetryable every error is retried")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = work(ctx, errPermanent, isRetryable)
	require.NotErrorAs(t, err, &cancelErr, "an error after the job's context ended is never a cancel")
	var snoozeErr *river.JobSnoozeError
	require.NotErrorAs(t, err, &snoozeErr, "a job timeout or plain cancel uses the attempt")

	ctx, cancelCause := context.WithCancelCause(context.Background())
	cancelCause(ErrShutdown)
	err = work(ctx, errPermanent, isRetryable)
	require.ErrorAs(t, err, &snoozeErr, "interrupted by shutdown: snoozed, using no attempt")
	require.Zero(t, snoozeErr.Duration)
	require.NoError(t, work(ctx, nil, isRetryable), "a run that finished anyway completes")
}

func TestBackoffDoubles(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	p := &backoffPolicy{base: 5 * time.Second, now: func() time.Time { return now }}
	for earlier, want := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second} {
		job := &rivertype.JobRow{Errors: make([]rivertype.AttemptError, earlier)}
		require.Equal(t, now.Add(want), p.NextRetry(job), "after %d earlier failures", earlier)
	}
	require.Equal(t, maxRetryBackoff, backoff(5*time.Second, 100))
	require.Equal(t, maxRetryBackoff, backoff(2*time.Hour, 0))
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{}.withDefaults()
	require.Equal(t, DefaultWorkers, c.Workers)
	require.Equal(t, DefaultMaxAttempts, c.MaxAttempts)
	require.Equal(t, DefaultRetryBackoff, c.RetryBackoff)
	require.Equal(t, time.Duration(-1), c.JobTimeout, "no job timeout by default")
	require.Equal(t, DefaultRescueAfter, c.RescueAfter)
	require.Equal(t, DefaultFleetRescanInterval, c.FleetRescanInterval)
	require.NotEmpty(t, c.ID)
	require.NotEqual(t, c.ID, Config{}.withDefaults().ID)

	c = Config{JobTimeout: 2 * time.Second}.withDefaults()
	require.Equal(t, 2*time.Second+DefaultRescueMargin, c.RescueAfter)
	c = Config{JobTimeout: -1}.withDefaults()
	require.Equal(t, time.Hour, c.RescueAfter)
}
