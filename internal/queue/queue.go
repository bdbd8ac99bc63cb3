// Package queue wires tenantmigrate's background jobs to River: the job
// kinds (migrate_tenant, fleet_scan), their workers, batched enqueueing and
// the River client that runs them in schema "tenantmigrate" of the control
// plane.
package queue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/tenantmigrate/tenantmigrate/internal/instances"
)

// Schema is the control-plane schema that holds River's tables.
const Schema = "tenantmigrate"

// Defaults of Config.
const (
	DefaultWorkers             = 4
	DefaultMaxAttempts         = 3
	DefaultRetryBackoff        = 5 * time.Second
	DefaultRescueMargin        = time.Minute
	DefaultRescueAfter         = time.Hour
	DefaultPollInterval        = time.Second
	DefaultEnqueueBatchSize    = 1000
	DefaultFleetRescanInterval = 10 * time.Minute

	// fetchCooldown is how often a producer may fetch, and how often an
	// inserting client may NOTIFY, per queue. River's default is 100ms; an
	// idle producer fetches on the leading edge of the first notification
	// anyway, so the cooldown only delays jobs inserted in quick succession.
	fetchCooldown = 10 * time.Millisecond

	// hardStopTimeout bounds the wait for cancelled jobs to return when Stop's
	// context ends before running jobs have finished.
	hardStopTimeout = 10 * time.Second
)

// ErrInsertOnly is returned by Start on a Queue built with RunWorkers false.
var ErrInsertOnly = errors.New("queue is insert-only (RunWorkers is false)")

// ErrShutdown is the cause (context.Cause) of a job's context that Stop
// cancelled because its ctx ended before the job finished. A Runner that sees
// it records nothing for the tenant: the job goes back to the queue without
// using an attempt (see tenantWorker.Work).
var ErrShutdown = errors.New("job interrupted by shutdown")

// Config configures a Queue. The zero value of each field means its default.
type Config struct {
	// Pool is the control-plane pool; River's tables live in its schema
	// "tenantmigrate" (controlplane.Migrate creates them). Required.
	//
	// A working Queue holds one connection for LISTEN and uses more for
	// fetching, completing and leader election, on top of what Runner needs
	// per running job, so give the pool at least Workers+4 connections.
	Pool *pgxpool.Pool

	// RunWorkers makes this Queue work jobs (and take part in River's leader
	// election, which runs the fleet scan schedule, retries and rescues). When
	// false the Queue only inserts jobs, as a CLI does; Start then returns
	// ErrInsertOnly.
	RunWorkers bool

	// Runner performs migrate_tenant jobs. Required when RunWorkers is true.
	Runner Runner

	// IsRetryable classifies a Runner error. A job whose error is not
	// retryable is cancelled at once instead of using its remaining attempts.
	// The root package sets migrator.IsRetryable.
	//
	// Defaults to treating every error as retryable.
	IsRetryable func(error) bool

	// Workers is how many jobs this instance runs at the same time.
	//
	// Each job runs DDL against a tenant database, holding one connection to
	// it and, briefly, one to the control plane. Tenant databases commonly
	// share a PostgreSQL host with few cores (2-4 vCPU), and migrations there
	// are bound by that host's CPU, I/O and locks, not by this process: about
	// one running migration per core keeps the host busy without making every
	// tenant's traffic wait. Four also matches pgxpool's default MaxConns on a
	// small machine. Instances add up: N instances run N*Workers migrations.
	//
	// Defaults to 4.
	Workers int

	// MaxAttempts is how many times a migrate_tenant (or fleet_scan) job runs
	// before River discards it.
	//
	// Defaults to 3.
	MaxAttempts int

	// RetryBackoff is the wait before the first retry; each further retry
	// waits twice as long as the one before (5s, 10s, 20s, ...), capped at one
	// hour.
	//
	// Defaults to 5 seconds.
	RetryBackoff time.Duration

	// JobTimeout, when positive, is how long one attempt may run before its
	// context is cancelled: an opt-in limit. Zero or negative: no timeout. A
	// dead instance's jobs are rescued by its missing heartbeats
	// (internal/instances), not by a timeout, so a migration may run for
	// hours.
	//
	// Defaults to none.
	JobTimeout time.Duration

	// RescueAfter is how long a job may stay running before River's rescuer
	// (run by the leader every 30 seconds) takes it as abandoned and
	// schedules its next attempt. River's rescuer leaves alone the jobs of a
	// client without a job timeout, so it acts only with a positive
	// JobTimeout, on an attempt that outlived its cancellation. It must be at
	// least JobTimeout, or a slow but healthy attempt would run twice.
	//
	// Defaults to JobTimeout plus one minute, or to one hour without a job
	// timeout.
	RescueAfter time.Duration

	// PollInterval is how often an idle worker looks for jobs without being
	// told. New jobs normally start at once through LISTEN/NOTIFY; polling
	// picks up retries whose backoff has passed and anything a lost
	// notification missed.
	//
	// Defaults to 1 second.
	PollInterval time.Duration

	// EnqueueBatchSize is how many jobs Enqueue inserts per statement.
	//
	// Defaults to 1000.
	EnqueueBatchSize int

	// FleetScan, when set on a Queue with RunWorkers, registers the worker of
	// fleet_scan jobs: the job runs FleetScan on whichever instance fetches
	// it. Set it on every instance that works jobs, whatever its strategy, so
	// that no instance fails a scan job as an unknown kind. See
	// strategy.Fleet.
	//
	// Defaults to nil: fleet_scan jobs are not worked.
	FleetScan FleetScanFunc

	// ScheduleFleetScan, with FleetScan, adds a periodic job that River's
	// elected leader enqueues when it gains leadership (RunOnStart) and then
	// every FleetRescanInterval. Start also enqueues one at once, because the
	// leader's first one comes only after River's staggered start of its
	// maintenance services (0 to about 6 seconds); fleet_scan jobs are unique
	// per interval and latest version, so this adds no scan.
	//
	// Defaults to false: scans run only when asked for.
	ScheduleFleetScan bool

	// Latest is the latest migration version of this instance's source. It
	// goes into the jobs this Queue inserts, and jobs aimed above it (queued
	// by a newer release, during a rolling deploy) are left to instances
	// that have that version: see NewerReleaseSnooze.
	Latest int64

	// NewerReleaseSnooze is how long a job aimed at a version above Latest
	// is put back (snoozed: no attempt used) when this instance fetches it,
	// so an instance of the newer release runs it. Long enough that an old
	// instance does not busy-loop over a new release's jobs.
	//
	// Defaults to DefaultNewerReleaseSnooze (30s).
	NewerReleaseSnooze time.Duration

	// FleetRescanInterval is how often the leader enqueues a fleet_scan job
	// after the first one. A negative value disables rescans: the fleet is
	// scanned only when an instance gains leadership. fleet_scan jobs are also
	// unique per interval (per 10 minutes when rescans are disabled), so a
	// change of leader within an interval does not scan again.
	//
	// Defaults to 10 minutes.
	FleetRescanInterval time.Duration

	// ID identifies this instance in River (leader election, attempted_by).
	// It must differ between running instances. The root package sets the
	// instance id of internal/instances, whose rescuer finds a dead
	// instance's jobs by it.
	//
	// Defaults to instances.DefaultID(): the host name, process id and a
	// random suffix.
	ID string

	// Logger receives River's logs, and a warning from New when Pool looks too
	// small for Workers.
	//
	// Defaults to discarding logs.
	Logger *slog.Logger
}

// withDefaults returns a copy of c with defaults applied.
func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.JobTimeout <= 0 {
		c.JobTimeout = -1 // River's "no timeout"
	}
	if c.RescueAfter <= 0 {
		if c.JobTimeout > 0 {
			c.RescueAfter = c.JobTimeout + DefaultRescueMargin
		} else {
			c.RescueAfter = DefaultRescueAfter
		}
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.EnqueueBatchSize <= 0 {
		c.EnqueueBatchSize = DefaultEnqueueBatchSize
	}
	if c.FleetRescanInterval == 0 {
		c.FleetRescanInterval = DefaultFleetRescanInterval
	}
	if c.ID == "" {
		c.ID = instances.DefaultID()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.Pool == nil {
		return errors.New("queue: Pool is required")
	}
	if c.RunWorkers && c.Runner == nil {
		return errors.New("queue: Runner is required when RunWorkers is true")
	}
	if c.JobTimeout > 0 && c.RescueAfter < c.JobTimeout {
		return fmt.Errorf("queue: RescueAfter (%s) must be at least JobTimeout (%s)", c.RescueAfter, c.JobTimeout)
	}
	if c.PollInterval < fetchCooldown {
		return fmt.Errorf("queue: PollInterval must be at least %s", fetchCooldown)
	}
	return nil
}

// Queue enqueues and (with RunWorkers) works tenantmigrate's jobs.
type Queue struct {
	cfg        Config
	client     *river.Client[pgx.Tx]
	insertOpts *river.InsertOpts

	// cancelWork cancels the context the River client was started with, and
	// so every running job's, with ErrShutdown. Set by Start; Start and Stop
	// are serialised by lifeMu, which nothing a job does takes.
	lifeMu     sync.Mutex
	cancelWork context.CancelCauseFunc

	// after runs WaitError.AfterSnooze on River's job_snoozed events, from
	// Start to Stop; afterDone is closed when its loop has returned.
	after     *afterSnooze
	afterDone chan struct{}
}

// New builds a Queue and its River client. It does not touch the database;
// Start does.
func New(cfg Config) (*Queue, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}

	after := &afterSnooze{}
	rcfg := &river.Config{
		ID:                   cfg.ID,
		Schema:               Schema,
		Logger:               cfg.Logger,
		MaxAttempts:          cfg.MaxAttempts,
		FetchCooldown:        fetchCooldown,
		FetchPollInterval:    cfg.PollInterval,
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: cfg.RescueAfter,
		RetryPolicy:          &backoffPolicy{base: cfg.RetryBackoff, now: time.Now},
	}
	if cfg.RunWorkers {
		workers := river.NewWorkers()
		snooze := cmp.Or(cfg.NewerReleaseSnooze, DefaultNewerReleaseSnooze)
		if err := river.AddWorkerSafely(workers, &tenantWorker{runner: cfg.Runner, isRetryable: cfg.IsRetryable, after: after, latest: cfg.Latest, snooze: snooze}); err != nil {
			return nil, fmt.Errorf("queue: register %s worker: %w", KindMigrateTenant, err)
		}
		if err := addRollbackWorker(workers, cfg.Runner, cfg.IsRetryable, after, snooze, cfg.Latest); err != nil {
			return nil, err
		}
		if cfg.FleetScan != nil {
			if err := river.AddWorkerSafely(workers, &fleetScanWorker{scan: cfg.FleetScan, latest: cfg.Latest, snooze: snooze}); err != nil {
				return nil, fmt.Errorf("queue: register %s worker: %w", KindFleetScan, err)
			}
			if cfg.ScheduleFleetScan {
				rcfg.PeriodicJobs = []*river.PeriodicJob{fleetScanPeriodicJob(cfg)}
			}
		}
		rcfg.Workers = workers
		rcfg.Queues = map[string]river.QueueConfig{
			river.QueueDefault: {MaxWorkers: cfg.Workers},
		}
		if maxConns := int(cfg.Pool.Config().MaxConns); maxConns < cfg.Workers+4 {
			cfg.Logger.Warn("control-plane pool may be too small for the queue workers",
				slog.Int("max_conns", maxConns), slog.Int("workers", cfg.Workers))
		}
	}

	client, err := river.NewClient(riverpgxv5.New(cfg.Pool), rcfg)
	if err != nil {
		return nil, fmt.Errorf("queue: create river client: %w", err)
	}
	return &Queue{
		cfg:        cfg,
		client:     client,
		insertOpts: &river.InsertOpts{MaxAttempts: cfg.MaxAttempts},
		after:      after,
	}, nil
}

// fleetScanPeriodicJob is the leader's schedule of fleet_scan jobs: one when
// it gains leadership, then one per FleetRescanInterval (none when that is
// negative).
func fleetScanPeriodicJob(cfg Config) *river.PeriodicJob {
	schedule := river.NeverSchedule()
	if cfg.FleetRescanInterval > 0 {
		schedule = river.PeriodicInterval(cfg.FleetRescanInterval)
	}
	opts := fleetScanStartOpts(cfg)
	return river.NewPeriodicJob(schedule,
		func() (river.JobArgs, *river.InsertOpts) { return FleetScanArgs{Latest: cfg.Latest}, opts },
		&river.PeriodicJobOpts{RunOnStart: true},
	)
}

// fleetScanStartOpts are the insert options of the fleet_scan jobs of the
// schedule and of Start: unique per FleetRescanInterval (per 10 minutes when
// rescans are disabled).
func fleetScanStartOpts(cfg Config) *river.InsertOpts {
	window := DefaultFleetRescanInterval
	if cfg.FleetRescanInterval > 0 {
		window = max(cfg.FleetRescanInterval, time.Second)
	}
	return fleetScanInsertOpts(window, cfg.MaxAttempts)
}

// Start starts working jobs and, with Config.ScheduleFleetScan, enqueues the fleet
// scan of this interval unless it was enqueued already. The jobs run under a
// context detached from ctx: cancelling ctx (a signal, say) cancels no job;
// Stop ends them, gracefully. Start returns ErrInsertOnly when RunWorkers is
// false. Calling Start on a running Queue does nothing; a Queue that failed to
// start, or was stopped, can be started again.
func (q *Queue) Start(ctx context.Context) error {
	if !q.cfg.RunWorkers {
		return ErrInsertOnly
	}
	q.lifeMu.Lock()
	defer q.lifeMu.Unlock()
	if q.cancelWork != nil {
		return nil
	}
	// River's Start pings the database with ctx's values and no deadline of
	// ctx's; its job contexts derive from workCtx, so only cancelWork (and
	// Stop) ends them.
	workCtx, cancelWork := context.WithCancelCause(context.WithoutCancel(ctx))
	if err := q.client.Start(workCtx); err != nil {
		cancelWork(err)
		return fmt.Errorf("queue: start: %w", err)
	}
	q.cancelWork = cancelWork
	events, unsubscribe := q.client.Subscribe(river.EventKindJobSnoozed)
	q.afterDone = make(chan struct{})
	go func() {
		defer close(q.afterDone)
		defer unsubscribe()
		q.after.run(workCtx, events)
	}()
	if q.cfg.FleetScan != nil && q.cfg.ScheduleFleetScan {
		// The leader's RunOnStart insert comes only after River has started
		// its maintenance services one after the other, each after a random
		// sleep of up to a second: 0 to 6 seconds after it takes office.
		// Insert the scan now instead. The job is unique per window, so
		// instances starting together insert one between them, and the
		// leader's insert, when it comes, finds it and adds nothing.
		if _, err := q.client.Insert(ctx, FleetScanArgs{Latest: q.cfg.Latest}, fleetScanStartOpts(q.cfg)); err != nil {
			// Not fatal: the leader's schedule inserts it anyway.
			q.cfg.Logger.WarnContext(ctx, "fleet scan not queued at start; the leader's schedule will queue it", slog.String("err", err.Error()))
		}
	}
	return nil
}

// Stop stops fetching jobs and waits for running jobs to finish, then
// returns nil. If ctx ends first, it cancels the running jobs with cause
// ErrShutdown: their migrations roll back, the Runner records nothing, and
// each job goes back to the queue, available at once to any instance,
// without using an attempt. It then waits up to 10 seconds for them to
// return and returns ctx's error. Stop is safe to call more than once, and
// on a Queue that never started.
func (q *Queue) Stop(ctx context.Context) error {
	q.lifeMu.Lock()
	defer q.lifeMu.Unlock()
	if q.cancelWork == nil {
		return nil
	}
	err := q.client.Stop(ctx)
	if err != nil && ctx.Err() != nil {
		// The same as River's StopAndCancel, but with a cause of our own,
		// which tells the Runner and the worker that the job was interrupted
		// by shutdown rather than by its timeout.
		q.cancelWork(ErrShutdown)
		hardCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), hardStopTimeout)
		defer cancel()
		if hardErr := q.client.Stop(hardCtx); hardErr != nil {
			return fmt.Errorf("queue: stop: %w (and running jobs did not return after cancellation: %w)", err, hardErr)
		}
		err = fmt.Errorf("queue: stop: running jobs interrupted and requeued: %w", err)
	}
	q.cancelWork(nil)
	q.cancelWork = nil
	<-q.afterDone
	q.after.reset()
	return err
}

// Wake makes the given jobs, waiting for a time to come (snoozed or
// scheduled), available now (River's JobRetry), e.g. because the server
// they waited for has room again, and tells every producer on the control
// plane to fetch at once. A job that is running, being fetched or finished
// meanwhile is left as it is. A job already available (its snooze ended)
// is left available, and the producers are told too: River fetches an
// available job only when told of an insert, when a worker of a producer
// that ran out of them frees, or at its next poll.
//
// River's JobRetry sends no notification: without one, a woken job waits
// for the next poll of some producer (PollInterval), and a freed slot of its
// server stays idle that long. River has no public API for an insert
// notification, so Wake sends in the same transaction the one River's
// Client.maybeNotifyInsertForQueues sends after an insert (River v0.51.2,
// client.go, through riverpgxv5's NotifyMany): pg_notify on channel
// "<schema>.river_insert" (notifier.NotificationTopicInsert) with payload
// {"queue": "<queue>"}, which each producer of that queue
// (producer.go, handleInsertNotification) answers with a fetch, debounced by
// FetchCooldown. It is delivered on commit, when the jobs are visible. A
// notification lost or sent to no listener costs what it did before: the
// next poll.
func (q *Queue) Wake(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, q.cfg.Pool, func(tx pgx.Tx) error {
		// Lock the jobs that still wait, so that none is fetched, run and
		// finished between this check and JobRetry, which would make a
		// finished job available again. A job a producer is fetching is
		// locked already: skip it, it runs anyway.
		rows, err := tx.Query(ctx, `SELECT id, queue, state = 'scheduled' OR scheduled_at > now() FROM `+Schema+`.river_job
			WHERE id = ANY($1) AND state IN ('available', 'scheduled')
			ORDER BY id FOR UPDATE SKIP LOCKED`, ids)
		if err != nil {
			return fmt.Errorf("queue: wake jobs: %w", err)
		}
		type waitingJob struct {
			ID    int64
			Queue string
			Later bool // not fetchable before its time (or River's scheduler) comes
		}
		waiting, err := pgx.CollectRows(rows, pgx.RowToStructByPos[waitingJob])
		if err != nil {
			return fmt.Errorf("queue: wake jobs: %w", err)
		}
		var queues []string
		for _, w := range waiting {
			if w.Later {
				if _, err := q.client.JobRetryTx(ctx, tx, w.ID); err != nil {
					return fmt.Errorf("queue: wake job %d: %w", w.ID, err)
				}
			}
			if !slices.Contains(queues, w.Queue) {
				queues = append(queues, w.Queue)
			}
		}
		for _, queue := range queues {
			payload, err := json.Marshal(insertNotification{Queue: queue})
			if err != nil {
				return fmt.Errorf("queue: wake jobs: %w", err)
			}
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, Schema+"."+riverInsertTopic, string(payload)); err != nil {
				return fmt.Errorf("queue: notify woken jobs: %w", err)
			}
		}
		return nil
	})
}

// riverInsertTopic is River's notifier.NotificationTopicInsert (internal to
// River): producers LISTEN on "<schema>.river_insert" and fetch when told of
// jobs in their queue.
const riverInsertTopic = "river_insert"

// insertNotification is the payload of River's insert notification
// (River's insertPayload, producer.go).
type insertNotification struct {
	Queue string `json:"queue"`
}

// Client returns the River client, e.g. for River UI or tests.
func (q *Queue) Client() *river.Client[pgx.Tx] { return q.client }

// RescueAfter is Config.RescueAfter with its default applied.
func (q *Queue) RescueAfter() time.Duration { return q.cfg.RescueAfter }
