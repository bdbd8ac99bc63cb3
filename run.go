package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// This file connects every trigger of a tenant run to the one executor,
// internal/run: an inline run (a request, MigrateTenant, the stale-tenant
// probe) through migrateNow, a queued job through jobRunner.RunTenant, and
// MigrateTenants (migratetenants.go). It also holds what callers see of a
// run: MigrationError, RunEvent and Hooks.OnRun.

// Trigger says what started a tenant's run (RunEvent.Trigger).
type Trigger string

// Triggers of a run.
const (
	// TriggerRequest is a run during a request: EnsureMigrated or
	// Middleware, on_request or a never-migrated tenant. Concurrent
	// requests, and MigrateTenant, share one run.
	TriggerRequest Trigger = "request"
	// TriggerStaleRetry is the background attempt a request starts for a
	// FAILED_STALE tenant (full_fleet, progressive).
	TriggerStaleRetry Trigger = "stale_retry"
	// TriggerQueue is a queued migrate_tenant job.
	TriggerQueue Trigger = "queue"
	// TriggerAdmin is MigrateTenant: the admin API's "migrate now".
	TriggerAdmin Trigger = "admin"
	// TriggerBatch is MigrateTenants: the CLI's migrate --all and
	// --tenant.
	TriggerBatch Trigger = "batch"
)

// RunEvent is one migration run of one tenant, given to Hooks.OnRun.
type RunEvent struct {
	TenantID string
	Trigger  Trigger
	Strategy Strategy
	// Attempt is the queued job's attempt, from 1 (TriggerQueue), or the
	// attempt within MigrateTenants' retries (TriggerBatch); 0 otherwise.
	Attempt int
	// Direction is the run's: up, down (Rollback) or force (Force).
	Direction Direction
	// FromVersion is the version the control plane recorded before the run,
	// nil for a tenant never migrated (or whose target changed).
	FromVersion *int64
	// ToVersion is the tenant database's version after the run: the last
	// version applied, or -1 when a failed run could not read it (an
	// unreachable tenant).
	ToVersion int64
	// Applied are the versions the run applied, in order; on failure, the
	// ones before the failed migration.
	Applied  []int64
	Duration time.Duration
	// Err is the run's error, a *MigrationError; nil when it succeeded.
	Err error
}

// MigrationError is returned by EnsureMigrated, MigrateTenant and queued
// jobs, and reported by MigrateTenants, when a tenant's migration failed. Like
// goose's PartialError it says what was applied before the failure.
type MigrationError struct {
	TenantID string
	// Version is the last version that applied: the tenant database's
	// version after the run, -1 when it could not be read.
	Version int64
	// Applied are the versions this run applied before the failure, in
	// order.
	Applied []int64
	// FailedVersion and FailedFile name the migration that failed (FailedFile
	// is the file's base name, or "go migration"); 0 and "" when the run
	// failed before applying one: it could not connect, the tenant lock or the
	// version table was in the way, invalid indexes were kept, ...
	FailedVersion int64
	FailedFile    string
	// Err is the cause (an error wrapping the PostgreSQL error, say).
	Err error
}

func (e *MigrationError) Error() string {
	return fmt.Sprintf("migrate tenant %s: %v", e.TenantID, e.Err)
}

func (e *MigrationError) Unwrap() error { return e.Err }

// newMigrationError is the MigrationError of a failed run.
func newMigrationError(tenantID string, out run.Outcome) *MigrationError {
	e := &MigrationError{TenantID: tenantID, Version: out.Version, Applied: slices.Clone(out.Applied), Err: out.Err}
	var applyErr *migrator.ApplyError
	if errors.As(out.Err, &applyErr) {
		e.FailedVersion, e.FailedFile = applyErr.Version, applyErr.Name
	}
	return e
}

// newExecutor is the executor every trigger runs tenants with.
func (o *Orchestrator) newExecutor() *run.Executor {
	cfg := run.Config{
		Store:           o.store,
		Latest:          o.latest,
		Target:          o.Target,
		StoredTarget:    o.storedTarget,
		RecordChecksums: o.recordChecksums,
		UpToDate:        o.cache.addIf,
		Interrupted:     cancelledByShutdown,
		OnRun:           o.runHook,
		Servers:         o.servers,
		History:         o.history,
		Logger:          o.logger,
	}
	if !o.cfg.ReadOnly {
		cfg.Rollout = (*rolloutHook)(o)
	}
	if o.migrator != nil { // a nil *Migrator in the interface would not be nil
		cfg.Migrator = o.migrator
	}
	if o.cfg.ReadOnly {
		cfg.ReadOnly = ErrReadOnly
	}
	return run.New(cfg)
}

// migrateNow migrates one tenant in this goroutine and records the result in
// the control plane. A failure is recorded with failStatus and returned, not
// logged: the caller returns it too, or logs it.
func (o *Orchestrator) migrateNow(ctx context.Context, tenantID string, gen uint64, failStatus controlplane.Status, trigger Trigger) (int64, error) {
	out, err := o.exec.Run(ctx, run.Request{
		TenantID:      tenantID,
		Trigger:       string(trigger),
		Generation:    gen,
		FailStatus:    func(error) controlplane.Status { return failStatus },
		WaitForServer: true,
	})
	if err != nil {
		return 0, err
	}
	return out.Version, outcomeErr(tenantID, out)
}

// outcomeErr is the error of a run that read its tenant: a *MigrationError
// for a failed migration (joined with the error of recording it, if that
// failed too), the recording error of a successful one, or nil.
func outcomeErr(tenantID string, out run.Outcome) error {
	switch {
	case out.Held != nil:
		return fmt.Errorf("tenant %s: %w", tenantID, out.Held)
	case out.Err != nil && out.RecordErr != nil:
		return fmt.Errorf("record failure of tenant %s: %w (%w)", tenantID, out.RecordErr, newMigrationError(tenantID, out))
	case out.Err != nil:
		return newMigrationError(tenantID, out)
	case out.RecordErr != nil:
		return fmt.Errorf("record tenant %s at version %d: %w", tenantID, out.Version, out.RecordErr)
	}
	return nil
}

// jobRunner runs queued migrate_tenant jobs for the queue package.
type jobRunner Orchestrator

// RunTenant performs one queued attempt: it re-reads the tenant and finishes
// at once when it was deleted or is already at the latest version; otherwise
// it migrates and records COMPLETED, FAILED while attempts remain, or
// FAILED_STALE after the last attempt or a non-retryable error.
//
// A queued job is the top of its stack (River only keeps the error for the
// job's state, logging it at info), so a failure is logged here, once, at
// warn, and returned to River.
func (r *jobRunner) RunTenant(ctx context.Context, tenantID string, attempt, maxAttempts int) error {
	o := (*Orchestrator)(r)
	out, err := o.exec.Run(ctx, run.Request{
		TenantID:     tenantID,
		Trigger:      string(TriggerQueue),
		Attempt:      attempt,
		Generation:   o.cache.generation(),
		SkipAtLatest: true,
		// A server that is full, down or unreachable holds the job back
		// without an attempt (a snooze): never FAILED_STALE for it.
		HoldUnreachable: true,
		FailStatus: func(err error) controlplane.Status {
			if servers.IsShutdown(err) {
				// A migration its server cut off as it stopped (or that
				// found it starting) failed for the server, not the tenant:
				// FAILED, so that the scans run it again, never
				// FAILED_STALE.
				return controlplane.StatusFailed
			}
			interrupted := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
			if attempt >= maxAttempts || (!interrupted && !migrator.IsRetryable(err)) {
				return controlplane.StatusFailedStale
			}
			return controlplane.StatusFailed
		},
	})
	if errors.Is(err, controlplane.ErrTenantNotFound) {
		o.logger.Info("queued tenant was deleted; nothing to do", "tenant_id", tenantID)
		return nil
	}
	if err != nil {
		return err
	}
	if out.Held != nil {
		return o.waitError(out.Held, out.Server)
	}
	err = outcomeErr(tenantID, out)
	if err != nil && !out.Interrupted {
		o.logger.Warn("tenant migration failed", "tenant_id", tenantID, "version", out.Version,
			"attempt", attempt, "max_attempts", maxAttempts, "status", out.Status,
			"duration_ms", out.Duration.Milliseconds(), "err", err)
	}
	return err
}

// runHook reports one run to Hooks.OnRun and Hooks.OnMigrationRun.
func (o *Orchestrator) runHook(ctx context.Context, e run.Event) {
	h := o.cfg.Hooks
	if h.OnMigrationRun != nil {
		result := "completed"
		if e.Err != nil {
			result = "failed"
		}
		h.OnMigrationRun(o.cfg.Strategy, result, e.Duration)
	}
	if h.OnRun == nil {
		return
	}
	ev := RunEvent{
		TenantID:    e.TenantID,
		Trigger:     Trigger(e.Trigger),
		Strategy:    o.cfg.Strategy,
		Attempt:     e.Attempt,
		Direction:   Direction(e.Direction),
		FromVersion: e.From,
		ToVersion:   e.To,
		Applied:     slices.Clone(e.Applied),
		Duration:    e.Duration,
	}
	if e.Err != nil {
		ev.Err = newMigrationError(e.TenantID, run.Outcome{Version: e.To, Applied: e.Applied, Err: e.Err})
	}
	h.OnRun(ctx, ev)
}

// cleanupCtx detaches ctx from cancellation for a short write that must
// happen even when the caller gave up, e.g. recording a failure.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
