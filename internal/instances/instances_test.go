package instances_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/instances"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// controlPlane returns a pool on a fresh, migrated control plane.
func controlPlane(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, controlplane.Migrate(t.Context(), pool))
	return pool
}

// runningJob inserts a migrate_tenant job for tenant, running attempt
// `attempt` on client since `since` ago, with metadata.
func runningJob(t *testing.T, pool *pgxpool.Pool, tenant, client string, attempt int, since time.Duration, metadata string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, pool.QueryRow(t.Context(), `
		INSERT INTO tenantmigrate.river_job (args, kind, max_attempts, state, attempt, attempted_at, attempted_by, metadata)
		VALUES (jsonb_build_object('tenant_id', $1::text), 'migrate_tenant', 3, 'running', $2,
		        now() - $3::bigint * interval '1 microsecond', ARRAY['an-earlier-client', $4], $5::jsonb)
		RETURNING id`, tenant, attempt, since.Microseconds(), client, metadata).Scan(&id))
	return id
}

// instanceRow inserts an instance whose last heartbeat was ago.
func instanceRow(t *testing.T, pool *pgxpool.Pool, id string, ago time.Duration) {
	t.Helper()
	_, err := pool.Exec(t.Context(), `
		INSERT INTO tenantmigrate.instances (id, host, pid, heartbeat_at, timeout)
		VALUES ($1, 'elsewhere', 1, now() - $2::bigint * interval '1 microsecond', interval '15 seconds')`, id, ago.Microseconds())
	require.NoError(t, err)
}

type jobRow struct {
	State   string
	Attempt int
	Rescues *int
	Errors  int
}

func readJob(t *testing.T, pool *pgxpool.Pool, id int64) jobRow {
	t.Helper()
	var j jobRow
	require.NoError(t, pool.QueryRow(t.Context(), `
		SELECT state::text, attempt, (metadata->>'`+instances.RescuesKey+`')::int, coalesce(cardinality(errors), 0)
		FROM tenantmigrate.river_job WHERE id = $1`, id).Scan(&j.State, &j.Attempt, &j.Rescues, &j.Errors))
	return j
}

func instanceExists(t *testing.T, pool *pgxpool.Pool, id string) bool {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM tenantmigrate.instances WHERE id = $1`, id).Scan(&n))
	return n == 1
}

func startService(t *testing.T, cfg instances.Config) *instances.Service {
	t.Helper()
	s, err := instances.New(cfg)
	require.NoError(t, err)
	require.NoError(t, s.Start(t.Context()))
	t.Cleanup(func() { _ = s.Stop(context.WithoutCancel(t.Context())) })
	return s
}

// TestRescuesOnlyDeadInstancesJobs: with one dead instance (silent for an
// hour), one live instance (heartbeating) and one client that never
// registered, the rescuer gives back the dead instance's job, available with
// its attempt returned and no error, and deletes the dead row; the live
// instance's job and the unregistered client's recent job keep running, and
// the unregistered client's hour-old job is rescued too (older releases).
func TestRescuesOnlyDeadInstancesJobs(t *testing.T) {
	t.Parallel()
	pool := controlPlane(t)
	live := startService(t, instances.Config{Pool: pool, Timeout: 400 * time.Millisecond})

	instanceRow(t, pool, "dead", time.Hour)
	deadJob := runningJob(t, pool, "t-dead", "dead", 2, time.Minute, `{}`)
	liveJob := runningJob(t, pool, "t-live", live.ID(), 1, time.Hour, `{}`)
	orphanRecent := runningJob(t, pool, "t-orphan-recent", "unregistered", 1, time.Minute, `{}`)
	orphanOld := runningJob(t, pool, "t-orphan-old", "unregistered", 1, 2*time.Hour, `{}`)

	startService(t, instances.Config{Pool: pool, Timeout: 400 * time.Millisecond, Rescue: true})

	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "the dead instance's job rescued", func() bool {
		return readJob(t, pool, deadJob).State == "available"
	})
	one := 1
	require.Equal(t, jobRow{State: "available", Attempt: 1, Rescues: &one}, readJob(t, pool, deadJob))
	require.Equal(t, jobRow{State: "available", Attempt: 0, Rescues: &one}, readJob(t, pool, orphanOld))
	// The same statement looked at these and left them.
	require.Equal(t, "running", readJob(t, pool, liveJob).State)
	require.Equal(t, "running", readJob(t, pool, orphanRecent).State)

	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "the dead instance's row deleted", func() bool {
		return !instanceExists(t, pool, "dead")
	})
	require.True(t, instanceExists(t, pool, live.ID()))
	require.Equal(t, "running", readJob(t, pool, liveJob).State)
}

// TestRescueCountsAttemptsAfterFreeRescues: a job already rescued
// MaxFreeRescues times uses an attempt when rescued again, with an error in
// its list, and one out of attempts is discarded and handed to OnDiscard.
func TestRescueCountsAttemptsAfterFreeRescues(t *testing.T) {
	t.Parallel()
	pool := controlPlane(t)
	instanceRow(t, pool, "dead", time.Hour)
	counted := runningJob(t, pool, "t-counted", "dead", 2, time.Minute, `{"`+instances.RescuesKey+`": 3}`)
	last := runningJob(t, pool, "t-last", "dead", 3, time.Minute, `{"`+instances.RescuesKey+`": 3}`)

	var mu sync.Mutex
	var discarded []instances.Rescued
	startService(t, instances.Config{Pool: pool, Timeout: 400 * time.Millisecond, Rescue: true, MaxFreeRescues: 3,
		OnDiscard: func(_ context.Context, jobs []instances.Rescued) {
			mu.Lock()
			defer mu.Unlock()
			discarded = append(discarded, jobs...)
		}})

	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "both jobs rescued", func() bool {
		return readJob(t, pool, counted).State != "running" && readJob(t, pool, last).State != "running"
	})
	four := 4
	require.Equal(t, jobRow{State: "available", Attempt: 2, Rescues: &four, Errors: 1}, readJob(t, pool, counted))
	require.Equal(t, jobRow{State: "discarded", Attempt: 3, Rescues: &four, Errors: 1}, readJob(t, pool, last))
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, discarded, 1)
	require.Equal(t, instances.Rescued{JobID: last, Kind: "migrate_tenant", TenantID: "t-last", Instance: "dead", Rescues: 4, Discarded: true}, discarded[0])
}

// TestStoppedInstanceIsDeadAtOnce: a job still listed as running on an
// instance that stopped gracefully is rescued without waiting for the
// instance timeout (an hour here).
func TestStoppedInstanceIsDeadAtOnce(t *testing.T) {
	t.Parallel()
	pool := controlPlane(t)
	stopped, err := instances.New(instances.Config{Pool: pool, Timeout: time.Hour})
	require.NoError(t, err)
	require.NoError(t, stopped.Start(t.Context()))
	job := runningJob(t, pool, "t1", stopped.ID(), 1, time.Second, `{}`)
	require.NoError(t, stopped.Stop(t.Context()))
	require.NoError(t, stopped.Stop(t.Context()), "second Stop")

	// A rescuer with a short timeout of its own, so that it may rescue soon.
	startService(t, instances.Config{Pool: pool, Timeout: 300 * time.Millisecond, Rescue: true})
	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "the stopped instance's job rescued", func() bool {
		return readJob(t, pool, job).State == "available"
	})
	fleettest.Poll(t, 20*time.Millisecond, 10*time.Second, "the stopped instance's row deleted", func() bool {
		return !instanceExists(t, pool, stopped.ID())
	})

	// Restartable: Start registers it again.
	require.NoError(t, stopped.Start(t.Context()))
	require.True(t, instanceExists(t, pool, stopped.ID()))
	require.NoError(t, stopped.Stop(t.Context()))
}

// TestNoRescueWhileOwnHeartbeatsFail: the control plane's server stops for
// longer than the instance timeout while two instances run, one of them with
// a running job. Once it is back, every heartbeat is old, but the rescuer
// waits until its own heartbeats have succeeded for a whole timeout, by
// which time the other instance has written its own: the job is never
// rescued. A job of a truly dead instance, seeded alongside, is.
func TestNoRescueWhileOwnHeartbeatsFail(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t, nil)
	pool, err := pgxpool.New(t.Context(), srv.URL("postgres"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	require.NoError(t, controlplane.Migrate(t.Context(), pool))

	// The other instance heartbeats less often than the rescuer looks, so
	// that a rescuer that did not wait would see its old heartbeat first.
	const timeout = time.Second
	other := startService(t, instances.Config{Pool: pool, Timeout: timeout, Interval: 250 * time.Millisecond})
	job := runningJob(t, pool, "t-other", other.ID(), 1, time.Second, `{}`)
	startService(t, instances.Config{Pool: pool, Timeout: timeout, Interval: 20 * time.Millisecond, Rescue: true})

	ctx := context.WithoutCancel(t.Context())
	stopCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	require.NoError(t, srv.Stop(stopCtx))
	stoppedAt := time.Now()
	for time.Since(stoppedAt) < 3*timeout { // the outage: both heartbeats fail
		time.Sleep(100 * time.Millisecond) //nolint:forbidigo // the outage's length, not a synchronisation
	}
	require.NoError(t, srv.Restart(stopCtx))

	instanceRow(t, pool, "dead", time.Hour)
	deadJob := runningJob(t, pool, "t-dead", "dead", 1, time.Minute, `{}`)
	fleettest.Poll(t, 20*time.Millisecond, 30*time.Second, "the dead instance's job rescued", func() bool {
		return readJob(t, pool, deadJob).State == "available"
	})
	require.Equal(t, "running", readJob(t, pool, job).State, "a live instance's job rescued after the outage")
}

// TestStartAfterFailedRegistration: a Start whose registration fails (no
// instances table yet) returns its error and leaves nothing to stop: Stop
// writes nothing (it would fail on the missing table). Once the control
// plane is migrated, Start registers the instance; a second Start does
// nothing, and Stop marks the instance stopped.
func TestStartAfterFailedRegistration(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	s, err := instances.New(instances.Config{Pool: pool, Timeout: time.Hour})
	require.NoError(t, err)

	require.ErrorContains(t, s.Start(t.Context()), "register instance "+s.ID())
	require.NoError(t, s.Stop(t.Context()), "Stop after a failed Start")

	require.NoError(t, controlplane.Migrate(t.Context(), pool))
	require.NoError(t, s.Start(t.Context()))
	require.NoError(t, s.Start(t.Context()), "second Start")
	require.True(t, instanceExists(t, pool, s.ID()))
	require.NoError(t, s.Stop(t.Context()))
	var stopped bool
	require.NoError(t, pool.QueryRow(t.Context(),
		`SELECT stopped_at IS NOT NULL FROM tenantmigrate.instances WHERE id = $1`, s.ID()).Scan(&stopped))
	require.True(t, stopped)
}
