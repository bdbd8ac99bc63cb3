// Package instances keeps the control plane's list of the processes that run
// migrations (table tenantmigrate.instances) and gives the queue jobs of dead
// ones back, in seconds rather than after River's time-based rescue.
//
// Every process that runs migrations (serve, migrate) runs a Service: it
// registers its instance id when it starts and refreshes its heartbeat (the
// control plane's clock) every tenth of Config.Timeout. An instance is dead
// once its heartbeat is older than Config.Timeout, or once it stopped.
//
// With Config.Rescue, the Service also rescues: the River jobs still running
// on a dead instance (river_job.attempted_by names River client ids, and the
// queue's client id is the instance id) go back to available at once, with
// their attempt given back, as a job interrupted by a shutdown does. The run
// elsewhere takes the tenant's migration lock first (internal/migrator), and
// that lock is a session lock on the tenant database, which dies with the
// process: a second proof, independent of the heartbeat, that the old run is
// gone. A process that is alive but stalled (stopped, partitioned from the
// control plane) still holds its lock, so the new run waits for it and
// applies nothing the stalled one applied.
//
// Rescue pauses while the Service's own heartbeats fail, and starts only once
// they have succeeded for a whole Timeout: when the control plane was
// unreachable, every instance's heartbeat is old, and the others need that
// long to be heard again.
package instances

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/rivershared/startstop"
)

// Defaults of Config.
const (
	// DefaultTimeout is the default of Config.Timeout.
	DefaultTimeout = 15 * time.Second
	// DefaultMaxFreeRescues is the default of Config.MaxFreeRescues.
	DefaultMaxFreeRescues = 3
	// DefaultOrphanRescueAfter is the default of Config.OrphanRescueAfter.
	DefaultOrphanRescueAfter = time.Hour
)

// cleanupTimeout bounds the write that marks the instance stopped.
const cleanupTimeout = 5 * time.Second

// Config configures a Service. The zero value of each field means its
// default.
type Config struct {
	// Pool is the control-plane pool; the table lives in schema
	// "tenantmigrate" (controlplane.Migrate creates it). Required.
	Pool *pgxpool.Pool

	// ID identifies this process in the table and, as River's client id, in
	// river_job.attempted_by. It must differ between running processes.
	//
	// Defaults to the host name, process id and a random suffix
	// (HOST_PID_RANDOM).
	ID string

	// Timeout is how long this instance may go without a heartbeat before it
	// is taken as dead and its running jobs are rescued; it is recorded with
	// the heartbeat, so every rescuer applies this instance's own. A healthy
	// instance writes ten heartbeats per Timeout, so it takes ten failed
	// writes in a row to be taken for dead. It is also how long this
	// instance's heartbeats must have succeeded before it rescues.
	//
	// Defaults to 15 seconds.
	Timeout time.Duration

	// Interval is how often the heartbeat is written and, with Rescue, dead
	// instances are looked for.
	//
	// Defaults to Timeout/10.
	Interval time.Duration

	// Rescue makes this Service give the jobs of dead instances back to the
	// queue. Set it in processes that work the queue.
	//
	// Defaults to false: heartbeats only.
	Rescue bool

	// MaxFreeRescues is how many times a job may be rescued without using an
	// attempt. A migration that kills the process running it (out of memory,
	// say) would otherwise be handed from instance to instance forever: after
	// this many rescues each further one counts as a failed attempt, and a
	// job out of attempts is discarded (see OnDiscard).
	//
	// Defaults to 3.
	MaxFreeRescues int

	// OrphanRescueAfter is how long a job may run on a River client id that
	// has no row in the table (a process of an older release that does not
	// heartbeat, during a rolling deploy) before it is rescued as well, the
	// same way. Negative: never.
	//
	// Defaults to 1 hour.
	OrphanRescueAfter time.Duration

	// OnDiscard is called with the jobs the rescue discarded because they had
	// used all their attempts (see MaxFreeRescues), so that the tenant's state
	// can say so. Defaults to nothing.
	OnDiscard func(ctx context.Context, jobs []Rescued)

	// Logger receives a warning per rescued job and per heartbeat outage, and
	// an info record when heartbeats resume. Defaults to discarding.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = DefaultID()
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Interval <= 0 {
		c.Interval = max(c.Timeout/10, 10*time.Millisecond)
	}
	if c.MaxFreeRescues <= 0 {
		c.MaxFreeRescues = DefaultMaxFreeRescues
	}
	if c.OrphanRescueAfter == 0 {
		c.OrphanRescueAfter = DefaultOrphanRescueAfter
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Service heartbeats for one process and, with Config.Rescue, rescues the
// jobs of dead instances. Start and Stop follow the Orchestrator's contract:
// idempotent, restartable, safe before Start.
type Service struct {
	cfg  Config
	host string
	pid  int

	life startstop.BaseStartStop
	// registered says that the last Start registered the instance, so that
	// Stop marks it stopped. Start writes it before it starts the loop or
	// gives up, Stop reads it after the loop ended.
	registered bool

	health health // used by the loop goroutine only
}

// New returns a Service. It does not touch the database; Start does.
func New(cfg Config) (*Service, error) {
	if cfg.Pool == nil {
		return nil, errors.New("instances: Pool is required")
	}
	if cfg.Interval > 0 && cfg.Timeout > 0 && cfg.Interval >= cfg.Timeout {
		return nil, fmt.Errorf("instances: Interval (%s) must be below Timeout (%s)", cfg.Interval, cfg.Timeout)
	}
	cfg = cfg.withDefaults()
	host, _ := os.Hostname()
	return &Service{cfg: cfg, host: host, pid: os.Getpid()}, nil
}

// ID is this process's instance id, also its River client id.
func (s *Service) ID() string { return s.cfg.ID }

// Timeout is Config.Timeout with its default applied.
func (s *Service) Timeout() time.Duration { return s.cfg.Timeout }

// Start registers the instance (its first heartbeat) and then heartbeats, and
// rescues with Config.Rescue, in the background until Stop. The background
// work runs under a context detached from ctx. Start on a running Service
// does nothing; if the registration fails, Start returns its error and may be
// called again.
func (s *Service) Start(ctx context.Context) error {
	loopCtx, shouldStart, started, stopped := s.life.StartInit(context.WithoutCancel(ctx))
	if !shouldStart {
		return nil
	}
	if err := s.beat(ctx); err != nil {
		s.registered = false
		stopped() // startable again
		return fmt.Errorf("register instance %s: %w", s.cfg.ID, err)
	}
	s.registered = true
	s.health = health{timeout: s.cfg.Timeout}
	s.health.record(true, time.Now())
	go func() {
		started()
		defer stopped()
		s.loop(loopCtx)
	}()
	return nil
}

// Stop ends the background work, waits for it, and marks the instance
// stopped: dead at once for every rescuer, so that a job the process still
// lists as running (one whose end it could not record) is rescued without
// waiting for the timeout. Call it after the queue has stopped. It returns
// the error of that write; it is safe to call more than once and before
// Start.
func (s *Service) Stop(ctx context.Context) error {
	shouldStop, stopped, finalizeStop := s.life.StopInit()
	if !shouldStop {
		return nil
	}
	defer finalizeStop(true)
	<-stopped
	if !s.registered {
		return nil // the last Start failed: nothing to mark
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if _, err := s.cfg.Pool.Exec(ctx,
		`UPDATE tenantmigrate.instances SET stopped_at = now() WHERE id = $1`, s.cfg.ID); err != nil {
		return fmt.Errorf("mark instance %s stopped: %w", s.cfg.ID, err)
	}
	return nil
}

// loop heartbeats, and rescues, every Interval until ctx ends.
func (s *Service) loop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.tick(ctx)
	}
}

// tick writes one heartbeat and, when this instance may, rescues.
func (s *Service) tick(ctx context.Context) {
	now := time.Now()
	err := s.beat(ctx)
	if ctx.Err() != nil {
		return
	}
	switch change := s.health.record(err == nil, now); change {
	case healthLost:
		s.cfg.Logger.WarnContext(ctx, "instance heartbeat failed; rescuing paused until heartbeats succeed again for the instance timeout",
			slog.String("instance_id", s.cfg.ID), slog.String("err", errString(err)))
	case healthBack:
		s.cfg.Logger.InfoContext(ctx, "instance heartbeats resumed", slog.String("instance_id", s.cfg.ID))
	}
	if err != nil || !s.cfg.Rescue || !s.health.mayRescue(now) {
		return
	}
	if err := s.rescueOnce(ctx); err != nil && ctx.Err() == nil {
		s.cfg.Logger.WarnContext(ctx, "rescue of dead instances' jobs failed; trying again next heartbeat",
			slog.String("instance_id", s.cfg.ID), slog.String("err", err.Error()))
	}
}

// beat writes the heartbeat, registering the instance again if its row was
// deleted (taken for dead while stalled, then pruned).
func (s *Service) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.Timeout/2, s.cfg.Interval))
	defer cancel()
	_, err := s.cfg.Pool.Exec(ctx, `
		INSERT INTO tenantmigrate.instances (id, host, pid, timeout)
		VALUES ($1, $2, $3, $4::bigint * interval '1 microsecond')
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), timeout = excluded.timeout, stopped_at = NULL`,
		s.cfg.ID, s.host, s.pid, s.cfg.Timeout.Microseconds())
	if err != nil {
		return fmt.Errorf("write heartbeat: %w", err)
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// DefaultID is the host name, process id and a random suffix: unique even
// for several instances on one host or in one process.
func DefaultID() string {
	host, _ := os.Hostname()
	host = strings.NewReplacer(".", "_", "-", "_").Replace(host)
	if host == "" {
		host = "unknown_host"
	}
	if len(host) > 60 {
		host = host[:60]
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s_%d_%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
