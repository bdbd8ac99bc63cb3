package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/internal/queue"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// This file wires internal/servers, the per-server cap and outage tracking,
// to the Orchestrator: the probe of a DOWN server, waking the jobs that
// waited for a server, and the methods the admin API and the CLI show
// servers with.

// Server is one database server of the fleet, as ListServers shows it.
type Server = tenanttype.Server

// ServerState says whether a server is UP or DOWN.
type ServerState = tenanttype.ServerState

// Server states.
const (
	ServerUp   = tenanttype.ServerUp
	ServerDown = tenanttype.ServerDown
)

// ErrServerDown is wrapped by the error of a run held back because its
// tenant's database server is DOWN (a *ServerDownError), and by the
// MigrateProgress error of a tenant MigrateTenants gave up after
// Config.Servers.DownTimeout.
var ErrServerDown = servers.ErrDown

// ServerDownError names a DOWN server, since when and its last
// connection-level error. It wraps ErrServerDown.
type ServerDownError = servers.DownError

// ServerOf returns the database server of a tenant: the lower-case
// host:port of its URL (port 5432 when none is given), or its "server"
// label when set.
func ServerOf(databaseURL string, labels map[string]string) string {
	return servers.Of(databaseURL, labels)
}

// Delays of a queued job held back by its server.
const (
	// fullSnooze is the mean wait of a job whose server is full. A
	// released slot wakes as many of the server's oldest waiting jobs as it
	// has free slots (OnFree, wakeFreed), and a job held just then looks
	// again once its snooze is recorded (waitError), so this is only the
	// fallback for a release nobody announced: a process killed while it
	// held slots. It is long on purpose: each
	// return of a job that finds its server still full is a fetch, a run
	// up to the slot and a snooze, and at a second (the old value) the
	// jobs waiting behind a full server came back about 25 times per
	// tenant, which cost serve full_fleet about 20% of its throughput on
	// one server (BENCHMARKS.md §1, run D).
	fullSnooze = 10 * time.Second
	// unreachableSnooze is the mean wait after a connection-level failure
	// of a server not (yet) DOWN.
	unreachableSnooze = 2 * time.Second
)

// newServers builds the server manager of o.
func (o *Orchestrator) newServers() *servers.Manager {
	return servers.New(servers.Config{
		Pool:          o.pool,
		MaxPerServer:  o.cfg.Servers.MaxPerServer,
		ProbeInterval: o.cfg.Servers.ProbeInterval,
		Probe:         o.probeServer,
		OnUp:          func(ctx context.Context, server string) { o.wakeServer(ctx, server, 0) },
		OnFree:        o.wakeFreed,
		Logger:        o.logger,
	})
}

// probeServer connects to one tenant database of server.
func (o *Orchestrator) probeServer(ctx context.Context, server string) error {
	id, err := o.store.ServerTenant(ctx, server)
	if err != nil {
		return err
	}
	t, err := o.store.Get(ctx, id)
	if err != nil {
		return err
	}
	cfg, err := pgx.ParseConfig(t.DatabaseURL)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	return conn.Ping(ctx)
}

// wakeServer makes up to n (0: the server's cap) queued jobs of server's
// tenants that no worker runs available now, the oldest first, and has the
// producers fetch them.
func (o *Orchestrator) wakeServer(ctx context.Context, server string, n int) {
	if o.queue == nil {
		return
	}
	if n == 0 {
		n = o.servers.MaxPerServer()
	}
	ids, err := o.store.WaitingJobs(ctx, server, n)
	if err == nil {
		err = o.queue.Wake(ctx, ids)
	}
	if err != nil && ctx.Err() == nil {
		o.logger.Warn("wake jobs of database server", "server", server, "err", err)
	}
}

// wakeFreed wakes the jobs of server that can start now a slot of it was
// released: as many of the oldest waiting as it has free slots, not one
// per release. Two slots released together (two runs of the server ending
// at once, in one process or two) would otherwise each wake the same
// oldest job, which stays the oldest waiting until a producer fetches it,
// and leave the other slot idle until some job's snooze ends (fullSnooze).
// A job woken beyond the free slots finds the server full and waits again;
// one woken that a producer has already made available is fetched anyway.
func (o *Orchestrator) wakeFreed(ctx context.Context, server string) {
	free, err := o.servers.Free(ctx, server)
	if err != nil {
		if ctx.Err() == nil {
			o.logger.Warn("count free slots of database server", "server", server, "err", err)
		}
		free = 1 // the slot just released
	}
	if free > 0 {
		o.wakeServer(ctx, server, free)
	}
}

// waitError puts back a queued job whose run server held back. A job
// held because the server was full looks again once its snooze is
// recorded (queue.WaitError.AfterSnooze): a slot released meanwhile woke
// nothing, the job being still running in the control plane then. One held
// for a request of this process waiting for the server does not: the slot
// it would find free is the request's, and the request's release wakes
// the jobs.
func (o *Orchestrator) waitError(held error, server string) error {
	we := &queue.WaitError{Delay: o.heldDelay(held), Err: held}
	if errors.Is(held, servers.ErrFull) && !errors.Is(held, servers.ErrRequestWaits) && server != "" {
		we.AfterSnooze = func(ctx context.Context) { o.wakeFreed(ctx, server) }
	}
	return we
}

// heldDelay is how long a queued job whose run its server held back waits
// before it is tried again: about fullSnooze when the server is full (a
// released slot wakes it sooner), about the probe interval while it is
// DOWN (coming UP wakes it sooner), with jitter so that waiting jobs do
// not return in step.
func (o *Orchestrator) heldDelay(held error) time.Duration {
	mean := unreachableSnooze
	switch {
	case errors.Is(held, servers.ErrFull):
		mean = fullSnooze
	case errors.Is(held, servers.ErrDown):
		mean = o.servers.ProbeInterval()
	}
	return mean/2 + rand.N(mean)
}

// ListServers lists the database servers of the fleet: every server with
// tenants or known to the control plane, with its state, cap and load.
func (o *Orchestrator) ListServers(ctx context.Context) ([]Server, error) {
	return o.servers.List(ctx)
}

// SetServerMaxConcurrent sets the cap of one server for every process on
// the control plane, from 1 to MaxServerConcurrency, or removes its
// override with nil. It returns an error wrapping ErrInvalidConfig for a
// value out of range.
func (o *Orchestrator) SetServerMaxConcurrent(ctx context.Context, server string, n *int) error {
	if server == "" || len(server) > 1024 {
		return fmt.Errorf("%w: server name must have 1 to 1024 bytes", ErrInvalidConfig)
	}
	if n != nil && (*n < 1 || *n > MaxServerConcurrency) {
		return fmt.Errorf("%w: maxConcurrent is %d: want 1 to %d", ErrInvalidConfig, *n, MaxServerConcurrency)
	}
	if err := o.servers.SetMaxConcurrent(ctx, server, n); err != nil {
		return err
	}
	o.wakeServer(ctx, server, 0) // a raised cap has room now
	return nil
}
