package tenantmigrate

import (
	"context"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// This file is the run history's part of the public API: every run of a
// tenant, whatever triggered it, is a row in the control plane
// (internal/history, written by the one executor, internal/run), read with
// TenantRuns and RunDurations and pruned after Config.History.Retention.

// The run history's types, from the public package tenanttype.
type (
	// Run is one run of one tenant's migrations in the history.
	Run = tenanttype.Run
	// RunResult is how a Run ended.
	RunResult = tenanttype.RunResult
	// RunDurations summarises how long tenants took to migrate.
	RunDurations = tenanttype.RunDurations
)

// Results of a Run.
const (
	RunCompleted   = tenanttype.RunCompleted
	RunFailed      = tenanttype.RunFailed
	RunInterrupted = tenanttype.RunInterrupted
)

// History paging: TenantRuns' limit.
const (
	// DefaultRunsPageSize is the page size of TenantRuns when its limit is 0.
	DefaultRunsPageSize = history.DefaultPageSize
	// MaxRunsPageSize is the largest limit TenantRuns takes.
	MaxRunsPageSize = history.MaxPageSize
)

var (
	// ErrInvalidCursor is wrapped by TenantRuns' error for a cursor it did
	// not hand out.
	ErrInvalidCursor = history.ErrInvalidCursor
	// ErrInvalidLimit is wrapped by TenantRuns' error for a limit below 0 or
	// above MaxRunsPageSize.
	ErrInvalidLimit = history.ErrInvalidLimit
)

// initHistory sets up the run history and, unless ReadOnly or kept forever,
// its pruner.
func (o *Orchestrator) initHistory() {
	o.history = history.NewStore(o.pool, "")
	if o.cfg.ReadOnly || o.cfg.History.Retention < 0 {
		return
	}
	o.pruner = history.NewPruner(history.PrunerConfig{
		Store:     o.history,
		Retention: o.cfg.History.Retention,
		Logger:    o.logger,
	})
}

func (o *Orchestrator) startPruner(ctx context.Context) {
	if o.pruner != nil {
		_ = o.pruner.Start(ctx) // never fails
	}
}

func (o *Orchestrator) stopPruner() {
	if o.pruner != nil {
		o.pruner.Stop()
	}
}

// TenantRuns returns up to limit runs of tenant id (DefaultRunsPageSize when
// limit is 0), newest first, after cursor ("" for the first page), and the
// cursor of the next page ("" when there is none). It returns an error
// wrapping ErrTenantNotFound for a tenant the control plane does not list
// (the runs of a removed tenant stay until they age out, unlisted), and
// ErrInvalidCursor or ErrInvalidLimit for bad paging.
func (o *Orchestrator) TenantRuns(ctx context.Context, id, cursor string, limit int) ([]Run, string, error) {
	if _, err := o.store.GetState(ctx, id); err != nil {
		return nil, "", err
	}
	return o.history.List(ctx, id, cursor, limit)
}

// RunDurations measures how long tenants took to migrate, from the history:
// the p50 and p95 of the latest 1000 runs that started at or after since,
// completed and applied at least one migration. For ETAs and the fleet page.
func (o *Orchestrator) RunDurations(ctx context.Context, since time.Time) (RunDurations, error) {
	return o.history.Durations(ctx, since)
}
