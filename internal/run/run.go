// Package run owns one attempt of one tenant's migration, whatever
// triggered it: a request (the gate), a queued job, the admin API's
// "migrate now", a batch run (migrate --all). Like River's
// internal/jobexecutor, it is the one place where a tenant is read, run,
// recorded and reported, so limits, state, checksums and hooks are written
// once:
//
//  1. read the tenant (its target and the state the result must still match);
//  2. take the limits (none yet: see Executor.Run);
//  3. migrate it up (internal/migrator);
//  4. record the checksums of what was applied, then the result, only where
//     it was computed (controlplane.ErrStaleResult: run again);
//  5. report the run to the hook.
//
// An Executor returns what happened and logs no failure: the trigger at the
// top of the stack decides whether to return the error (a request, the admin
// API, a batch) or to log it (a queued job, a background retry).
package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// MaxStaleReruns bounds how often one Run runs a tenant again after its
// result could not be recorded because the tenant changed meanwhile (see
// controlplane.ErrStaleResult).
const MaxStaleReruns = 3

// Store is the part of the control plane a run reads and writes;
// *controlplane.Store implements it.
type Store interface {
	Get(ctx context.Context, id string) (controlplane.Tenant, error)
	RecordSuccess(ctx context.Context, id string, origin controlplane.RunOrigin, version int64) error
	RecordFailure(ctx context.Context, id string, origin controlplane.RunOrigin, version *int64, status controlplane.Status, errMsg string) error
}

// Migrator applies the pending migrations to one target; *migrator.Migrator
// implements it.
type Migrator interface {
	Migrate(ctx context.Context, t migrator.Target) (migrator.Result, error)
}

// Config configures an Executor. Store, Migrator and Latest are required
// unless ReadOnly is set.
type Config struct {
	Store    Store
	Migrator Migrator
	// Latest is the highest version of the source. A tenant recorded above
	// it belongs to a newer release and is never run or recorded.
	Latest int64
	// ReadOnly, when not nil, refuses every run with this error (the root
	// package's ErrReadOnly), before the tenant is read.
	ReadOnly error

	// RecordChecksums records the checksums of the versions a run applied
	// (drift detection); it handles its own errors. Defaults to nothing.
	RecordChecksums func(ctx context.Context, applied []int64)
	// UpToDate is told that a tenant is at the latest version, or belongs
	// to a newer release, with the Generation of the Request (the root
	// package's up-to-date cache). Defaults to nothing.
	UpToDate func(tenantID string, gen uint64)
	// Interrupted reports whether ctx, a run's, was cancelled by a
	// shutdown at its deadline: the run is interrupted, not failed, and
	// nothing is recorded. Defaults to never.
	Interrupted func(ctx context.Context) bool
	// OnRun is called after every migration of a tenant (each Migrate call:
	// a stale rerun is one more), on the running goroutine. Defaults to
	// nothing.
	OnRun func(ctx context.Context, e Event)
	// Rollout accounts every run to the active rollout of Latest and
	// refuses runs while it is halted (internal/rollouts). Defaults to
	// none.
	Rollout RolloutHook
	// Logger receives an info record per tenant migrated, per stale rerun
	// and per run interrupted by a shutdown; never a failure, which is
	// returned. Defaults to discarding.
	Logger *slog.Logger
}

// RolloutHook is the rollout accounting of every run, whatever triggered
// it.
type RolloutHook interface {
	// Admit is asked before a tenant is migrated. An error (the rollout to
	// Latest is halted) refuses the run: Run returns it, nothing is run or
	// recorded.
	Admit(ctx context.Context, tenantID string) error
	// Done is told the recorded result of each run: COMPLETED (also for a
	// tenant found at or above Latest without a run), FAILED (to be
	// retried) or FAILED_STALE. It handles its own errors.
	Done(ctx context.Context, r RolloutResult)
}

// RolloutResult is one run's result for RolloutHook.Done.
type RolloutResult struct {
	TenantID string
	Status   controlplane.Status
	Duration time.Duration
	// Err is the migration's error; FailedVersion the version that failed
	// (0 when none did: the run failed before applying one).
	Err           error
	FailedVersion int64
}

// Executor runs one tenant at a time per call; it is safe for concurrent
// use.
type Executor struct {
	cfg Config
}

// New returns an Executor.
func New(cfg Config) *Executor {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RecordChecksums == nil {
		cfg.RecordChecksums = func(context.Context, []int64) {}
	}
	if cfg.UpToDate == nil {
		cfg.UpToDate = func(string, uint64) {}
	}
	if cfg.Interrupted == nil {
		cfg.Interrupted = func(context.Context) bool { return false }
	}
	return &Executor{cfg: cfg}
}

// Request is one trigger's call.
type Request struct {
	TenantID string
	// Trigger names what started the run, for the Event.
	Trigger string
	// Attempt is the queued job's attempt (from 1), 0 for other triggers.
	Attempt int
	// Generation is passed back to Config.UpToDate.
	Generation uint64
	// SkipAtLatest finishes at once, running nothing, for a tenant recorded
	// COMPLETED at the latest version. Without it such a tenant is run
	// anyway (an explicit run checks the tenant database itself), except on
	// a stale rerun. A tenant recorded above the latest version is never
	// run.
	SkipAtLatest bool
	// FailStatus is the status a failed run is recorded with. Required.
	FailStatus func(err error) controlplane.Status
}

// Event is one migration of one tenant, for Config.OnRun.
type Event struct {
	TenantID string
	Trigger  string
	Attempt  int
	// From is the version recorded before the run (nil: never migrated).
	From *int64
	// To is the tenant database's version after the run, -1 when it could
	// not be read.
	To       int64
	Applied  []int64
	Duration time.Duration
	// Err is the migration's error, nil when it succeeded.
	Err error
}

// Outcome is what Run did, of the last migration it ran.
type Outcome struct {
	// Ran reports whether a migration ran; false when the tenant was
	// COMPLETED at the latest version (Request.SkipAtLatest) or belongs to
	// a newer release.
	Ran bool
	// From is the version recorded before the run.
	From *int64
	// Version is the tenant's version after the run (the recorded one when
	// nothing ran; -1 when a failed run could not read it).
	Version int64
	// Applied are the versions the run applied, in order.
	Applied  []int64
	Duration time.Duration
	// Err is the migration's error (wrapping a *migrator.ApplyError when a
	// migration failed), nil when it succeeded or nothing ran.
	Err error
	// Status is the status the failure was recorded with; "" when nothing
	// was recorded (success, interrupted, stale).
	Status controlplane.Status
	// Interrupted reports a run cancelled by a shutdown: nothing recorded.
	Interrupted bool
	// RecordErr is the error of recording the result, nil when it was
	// recorded, dropped as stale after the last rerun, or when nothing was
	// to be recorded (an interrupted run).
	RecordErr error
}

// Run runs one tenant now, in this goroutine, and records the result. It
// returns Config.ReadOnly when set, and an error for a tenant it
// could not read (wrapping controlplane.ErrTenantNotFound for an unknown
// one); everything else is in the Outcome. A result the control plane
// refuses because the tenant changed meanwhile (another URL or schema,
// registered again, or another run's result) is not recorded, and the tenant
// is run again as it is now, up to MaxStaleReruns times. A run cancelled by
// a shutdown (Config.Interrupted) records nothing.
func (e *Executor) Run(ctx context.Context, req Request) (Outcome, error) {
	if e.cfg.ReadOnly != nil {
		return Outcome{}, e.cfg.ReadOnly
	}
	for rerun := 0; ; rerun++ {
		// 1. The tenant as it is now: its target, and the state the result
		// must still match when it is recorded.
		t, err := e.cfg.Store.Get(ctx, req.TenantID)
		if errors.Is(err, controlplane.ErrDecrypt) && t.ID != "" {
			// The tenant exists but no configured key opens its URL: the
			// run fails, and the tenant says why, until the key is
			// configured again (see Tenant.DecryptError).
			return e.undecryptable(ctx, req, t, err), nil
		}
		if err != nil {
			return Outcome{}, fmt.Errorf("read tenant %s: %w", req.TenantID, err)
		}
		if e.newerRelease(t.MigrationsVersion) ||
			((req.SkipAtLatest || rerun > 0) && e.atLatest(t)) {
			e.cfg.UpToDate(req.TenantID, req.Generation)
			e.rolloutDone(ctx, RolloutResult{TenantID: req.TenantID, Status: controlplane.StatusCompleted})
			return Outcome{From: t.MigrationsVersion, Version: *t.MigrationsVersion}, nil
		}

		// 2. Limits. A halted rollout to Latest refuses the run. A limit on
		// runs per database host, or per fleet across instances, is taken
		// here, after the tenant is known and before its connection opens,
		// and released after step 4.
		if e.cfg.Rollout != nil && rerun == 0 {
			if err := e.cfg.Rollout.Admit(ctx, req.TenantID); err != nil {
				return Outcome{From: t.MigrationsVersion}, err
			}
		}

		// 3. Migrate.
		res, err := e.cfg.Migrator.Migrate(ctx, migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema})
		out := Outcome{Ran: true, From: t.MigrationsVersion, Version: res.Version, Applied: res.Applied, Duration: res.Duration, Err: err}

		// 4. Record: checksums first (they are true whatever the state).
		e.cfg.RecordChecksums(ctx, res.Applied)
		// 5. Report.
		e.report(ctx, req, out)

		attrs := []any{slog.String("tenant_id", req.TenantID), slog.Int64("version", res.Version), slog.String("trigger", req.Trigger)}
		if req.Attempt > 0 {
			attrs = append(attrs, slog.Int("attempt", req.Attempt))
		}
		if err == nil {
			if rerr := e.cfg.Store.RecordSuccess(ctx, req.TenantID, controlplane.OriginOf(t), res.Version); rerr != nil {
				if errors.Is(rerr, controlplane.ErrStaleResult) && rerun < MaxStaleReruns {
					e.cfg.Logger.Info("tenant changed during its run; result not recorded, running it again", attrs...)
					continue
				}
				out.RecordErr = rerr
				return out, nil
			}
			e.cfg.Logger.Info("tenant migrated", append(attrs, "applied", len(res.Applied), "duration_ms", res.Duration.Milliseconds())...)
			if res.Version >= e.cfg.Latest {
				e.cfg.UpToDate(req.TenantID, req.Generation)
			}
			e.rolloutDone(ctx, RolloutResult{TenantID: req.TenantID, Status: controlplane.StatusCompleted, Duration: res.Duration})
			return out, nil
		}

		if e.cfg.Interrupted(ctx) {
			// A queued job goes back to the queue without using the attempt;
			// the tenant keeps the state it had.
			e.cfg.Logger.Info("tenant migration interrupted by shutdown; nothing recorded", append(attrs, "duration_ms", res.Duration.Milliseconds())...)
			out.Interrupted = true
			return out, nil
		}
		status := req.FailStatus(err)
		rerr := e.recordFailure(ctx, t, res, status, err)
		if errors.Is(rerr, controlplane.ErrStaleResult) {
			if rerun < MaxStaleReruns && ctx.Err() == nil {
				e.cfg.Logger.Info("tenant changed during its run; failure not recorded, running it again", attrs...)
				continue
			}
			rerr = nil
		} else if rerr == nil {
			out.Status = status
			e.rolloutDone(ctx, failedResult(req.TenantID, status, res.Duration, err))
		}
		out.RecordErr = rerr
		return out, nil
	}
}

// undecryptable fails the run of a tenant t whose URL no configured key
// decrypts (err wraps controlplane.ErrDecrypt). A tenant that needed the
// run is recorded failed with req.FailStatus, naming why; one already up
// to date keeps its state.
func (e *Executor) undecryptable(ctx context.Context, req Request, t controlplane.Tenant, err error) Outcome {
	out := Outcome{Ran: true, From: t.MigrationsVersion, Version: -1, Err: err}
	e.report(ctx, req, out)
	if e.atLatest(t) || e.newerRelease(t.MigrationsVersion) {
		// Its database lacks nothing: the state stays true, and the gate
		// keeps serving it without reading its URL.
		return out
	}
	status := req.FailStatus(err)
	rctx, cancel := cleanupCtx(ctx)
	defer cancel()
	rerr := e.cfg.Store.RecordFailure(rctx, t.ID, controlplane.OriginOf(t), nil, status, err.Error())
	switch {
	case rerr == nil:
		out.Status = status
	case !errors.Is(rerr, controlplane.ErrStaleResult):
		out.RecordErr = rerr
	}
	return out
}

// rolloutDone tells the rollout hook of a recorded result, even when ctx
// has ended (the result is recorded).
func (e *Executor) rolloutDone(ctx context.Context, r RolloutResult) {
	if e.cfg.Rollout == nil {
		return
	}
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	e.cfg.Rollout.Done(ctx, r)
}

// failedResult is the RolloutResult of a failed run.
func failedResult(tenantID string, status controlplane.Status, d time.Duration, err error) RolloutResult {
	r := RolloutResult{TenantID: tenantID, Status: status, Duration: d, Err: err}
	var applyErr *migrator.ApplyError
	if errors.As(err, &applyErr) {
		r.FailedVersion = applyErr.Version
	}
	return r
}

func (e *Executor) report(ctx context.Context, req Request, out Outcome) {
	if e.cfg.OnRun == nil {
		return
	}
	e.cfg.OnRun(ctx, Event{
		TenantID: req.TenantID,
		Trigger:  req.Trigger,
		Attempt:  req.Attempt,
		From:     out.From,
		To:       out.Version,
		Applied:  out.Applied,
		Duration: out.Duration,
		Err:      out.Err,
	})
}

func (e *Executor) atLatest(t controlplane.Tenant) bool {
	return t.MigrationsVersion != nil && *t.MigrationsVersion >= e.cfg.Latest && t.MigrationsStatus == controlplane.StatusCompleted
}

// newerRelease reports whether a tenant recorded at version belongs to a
// newer release than this one's: a rolling deploy runs both, this release's
// migrations are all applied to it, and this release must neither run it
// (its source lacks the newer versions) nor record over the newer state.
func (e *Executor) newerRelease(version *int64) bool {
	return version != nil && *version > e.cfg.Latest
}

// recordFailure records a failed run of t (as it was read before the run),
// even when ctx has ended.
func (e *Executor) recordFailure(ctx context.Context, t controlplane.Tenant, res migrator.Result, status controlplane.Status, runErr error) error {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	return e.cfg.Store.RecordFailure(ctx, t.ID, controlplane.OriginOf(t), knownVersion(res), status, runErr.Error())
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
