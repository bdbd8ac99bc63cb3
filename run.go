package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// This file holds the one path that runs one tenant and records the result,
// whatever triggered it: an inline run (a request, MigrateTenant, the
// stale-tenant probe) through migrateNow, or a queued job through
// jobRunner.RunTenant.

// maxStaleReruns bounds how often one call runs a tenant again after its
// result could not be recorded because the tenant changed meanwhile (see
// controlplane.ErrStaleResult).
const maxStaleReruns = 3

// tenantRun says how one trigger runs a tenant.
type tenantRun struct {
	// skipAtLatest finishes at once, running nothing, for a tenant recorded
	// COMPLETED at the latest version. Without it such a tenant is run
	// anyway (an explicit MigrateTenant checks the tenant database itself),
	// except on a rerun. A tenant recorded above the latest version (a newer
	// release's) is never run.
	skipAtLatest bool
	// failStatus is the status a failed run is recorded with.
	failStatus func(err error) controlplane.Status
	// attrs are added to the run's log records (the job's attempt).
	attrs []any
}

// runOutcome is what runTenant did.
type runOutcome struct {
	// version is the tenant's version after the run (the recorded one when
	// nothing ran).
	version int64
	// err is the migration's error, nil when it succeeded or nothing ran.
	err error
	// recordErr is the error of recording the result, nil when it was
	// recorded, dropped as stale after the last rerun, or when nothing was
	// to be recorded (an interrupted run).
	recordErr error
}

// runTenant runs one tenant now, in this goroutine, and records the result.
// It returns an error for a tenant it could not read (wrapping
// ErrTenantNotFound for an unknown one). A result the control plane refuses
// because the tenant changed meanwhile (another URL or schema, registered
// again, or another run's result) is not recorded, and the tenant is run
// again as it is now, up to maxStaleReruns times. A run cancelled by Stop's
// deadline records nothing.
func (o *Orchestrator) runTenant(ctx context.Context, tenantID string, gen uint64, run tenantRun) (runOutcome, error) {
	for rerun := 0; ; rerun++ {
		t, err := o.store.Get(ctx, tenantID)
		if err != nil {
			return runOutcome{}, fmt.Errorf("read tenant %s: %w", tenantID, err)
		}
		if o.newerRelease(t.MigrationsVersion) ||
			((run.skipAtLatest || rerun > 0) && o.atLatest(t.MigrationsVersion, t.MigrationsStatus)) {
			o.cache.addIf(tenantID, gen)
			return runOutcome{version: *t.MigrationsVersion}, nil
		}

		res, err := o.migrator.Migrate(ctx, migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema})
		o.recordChecksums(ctx, res.Applied)
		o.runHook(err, res.Duration)
		attrs := append([]any{slog.String("tenant_id", tenantID), slog.Int64("version", res.Version)}, run.attrs...)

		if err == nil {
			if rerr := o.store.RecordSuccess(ctx, tenantID, t.Origin(), res.Version); rerr != nil {
				if errors.Is(rerr, controlplane.ErrStaleResult) && rerun < maxStaleReruns {
					o.logger.Info("tenant changed during its run; result not recorded, running it again", attrs...)
					continue
				}
				return runOutcome{version: res.Version, recordErr: rerr}, nil
			}
			o.logger.Info("tenant migrated", append(attrs, "applied", len(res.Applied), "duration_ms", res.Duration.Milliseconds())...)
			if res.Version >= o.latest {
				o.cache.addIf(tenantID, gen)
			}
			return runOutcome{version: res.Version}, nil
		}

		if cancelledByShutdown(ctx) {
			// A queued job goes back to the queue without using the attempt;
			// the tenant keeps the state it had.
			o.logger.Info("tenant migration interrupted by shutdown; nothing recorded", append(attrs, "duration_ms", res.Duration.Milliseconds())...)
			return runOutcome{version: res.Version, err: err}, nil
		}
		status := run.failStatus(err)
		o.logger.Warn("tenant migration failed", append(attrs, "status", status, "duration_ms", res.Duration.Milliseconds(), "err", err)...)
		rerr := o.recordFailure(ctx, t, res, status, err)
		if errors.Is(rerr, controlplane.ErrStaleResult) {
			if rerun < maxStaleReruns && ctx.Err() == nil {
				o.logger.Info("tenant changed during its run; failure not recorded, running it again", attrs...)
				continue
			}
			rerr = nil
		}
		return runOutcome{version: res.Version, err: err, recordErr: rerr}, nil
	}
}

// migrateNow migrates one tenant in this goroutine and records the result in
// the control plane. A failure is recorded with failStatus.
func (o *Orchestrator) migrateNow(ctx context.Context, tenantID string, gen uint64, failStatus controlplane.Status) (int64, error) {
	if o.cfg.ReadOnly {
		return 0, ErrReadOnly
	}
	out, err := o.runTenant(ctx, tenantID, gen, tenantRun{
		failStatus: func(error) controlplane.Status { return failStatus },
	})
	switch {
	case err != nil:
		return 0, err
	case out.err != nil:
		if out.recordErr != nil {
			o.logger.Error("record tenant failure", "tenant_id", tenantID, "err", out.recordErr)
		}
		return out.version, &MigrationError{TenantID: tenantID, Version: out.version, Err: out.err}
	case out.recordErr != nil:
		return out.version, fmt.Errorf("record tenant %s at version %d: %w", tenantID, out.version, out.recordErr)
	}
	return out.version, nil
}

// jobRunner runs queued migrate_tenant jobs for the queue package.
type jobRunner Orchestrator

// RunTenant performs one queued attempt: it re-reads the tenant and finishes
// at once when it was deleted or is already at the latest version; otherwise
// it migrates and records COMPLETED, FAILED while attempts remain, or
// FAILED_STALE after the last attempt or a non-retryable error.
func (r *jobRunner) RunTenant(ctx context.Context, tenantID string, attempt, maxAttempts int) error {
	o := (*Orchestrator)(r)
	if o.cfg.ReadOnly {
		return ErrReadOnly // not reached: a ReadOnly Orchestrator runs no workers
	}
	out, err := o.runTenant(ctx, tenantID, o.cache.generation(), tenantRun{
		skipAtLatest: true,
		failStatus: func(err error) controlplane.Status {
			interrupted := errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
			if attempt >= maxAttempts || (!interrupted && !migrator.IsRetryable(err)) {
				return controlplane.StatusFailedStale
			}
			return controlplane.StatusFailed
		},
		attrs: []any{"attempt", attempt, "max_attempts", maxAttempts},
	})
	switch {
	case errors.Is(err, controlplane.ErrTenantNotFound):
		o.logger.Info("queued tenant was deleted; nothing to do", "tenant_id", tenantID)
		return nil
	case err != nil:
		return err
	case out.err != nil && out.recordErr != nil:
		return fmt.Errorf("record failure of tenant %s: %w (migration error: %w)", tenantID, out.recordErr, out.err)
	case out.err != nil:
		return &MigrationError{TenantID: tenantID, Version: out.version, Err: out.err}
	case out.recordErr != nil:
		return fmt.Errorf("record tenant %s at version %d: %w", tenantID, out.version, out.recordErr)
	}
	return nil
}

func (o *Orchestrator) runHook(err error, d time.Duration) {
	h := o.cfg.Hooks.OnMigrationRun
	if h == nil {
		return
	}
	result := "completed"
	if err != nil {
		result = "failed"
	}
	h(o.cfg.Strategy, result, d)
}

// knownVersion is the tenant's version after a failed run, or nil when the
// run learnt nothing (it could not connect: the migrator reports -1) or the
// tenant has nothing applied, so the stored one stays.
func knownVersion(res migrator.Result) *int64 {
	if res.Version <= 0 {
		return nil
	}
	return &res.Version
}

// cleanupCtx detaches ctx from cancellation for a short write that must
// happen even when the caller gave up, e.g. recording a failure.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

// recordFailure records a failed run of t (as it was read before the run),
// even when ctx has ended.
func (o *Orchestrator) recordFailure(ctx context.Context, t controlplane.Tenant, res migrator.Result, status controlplane.Status, runErr error) error {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	return o.store.RecordFailure(ctx, t.ID, t.Origin(), knownVersion(res), status, runErr.Error())
}
