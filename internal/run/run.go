// Package run owns one attempt of one tenant's migration, whatever
// triggered it: a request (the gate), a queued job, the admin API's
// "migrate now", a batch run (migrate --all). Like River's
// internal/jobexecutor, it is the one place where a tenant is read, run,
// recorded and reported, so limits, state, checksums and hooks are written
// once:
//
//  1. read the tenant (its target and the state the result must still match);
//  2. take the limits: a slot of the tenant's database server
//     (internal/servers), refused while that server is DOWN, then the
//     trigger's own (Request.Limit);
//  3. migrate it up (internal/migrator);
//  4. record the checksums of what was applied, then the result, only where
//     it was computed (controlplane.ErrStaleResult: run again);
//  5. report the run: a row of the run history (internal/history), and the
//     hook.
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
	"runtime/debug"
	"strconv"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/redact"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
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
	// Down undoes the versions above to (DirectionDown).
	Down(ctx context.Context, t migrator.Target, to int64) (migrator.Result, error)
	// Force sets the version table to version, running nothing (DirectionForce).
	Force(ctx context.Context, t migrator.Target, version int64) (migrator.Result, error)
}

// Direction says which way a run goes.
type Direction string

// Directions of a run (Request.Direction, Event.Direction).
const (
	// DirectionUp applies the pending versions up to the target. The zero
	// Direction is up.
	DirectionUp Direction = "up"
	// DirectionDown undoes the versions above Request.To, newest first.
	DirectionDown Direction = "down"
	// DirectionForce sets the tenant's version table to Request.To and
	// runs no migration (a repair by hand came first).
	DirectionForce Direction = "force"
)

// History writes the run history; *history.Store implements it.
type History interface {
	// RecordOnTarget writes r, a run on the tenant's target targetSeq.
	RecordOnTarget(ctx context.Context, r history.Run, targetSeq int64) error
}

// Config configures an Executor. Store, Migrator and Latest are required
// unless ReadOnly is set.
type Config struct {
	Store    Store
	Migrator Migrator
	// Latest is the highest version of the source. A tenant recorded above
	// it belongs to a newer release and is never run or recorded.
	Latest int64
	// Target is the version up runs aim at now: the fleet's pinned target,
	// at most Latest, read at each run. Defaults to Latest.
	Target func() int64
	// StoredTarget, when set, reads the fleet target as the control plane
	// stores it now (at most Latest). An up run reads it again under the
	// tenant's lock, before it applies anything: when it is below the target
	// the run read before the lock (a pin committed meanwhile, perhaps by a
	// rollback that already undid the tenant), nothing is applied and the
	// tenant is run again as it is now. Defaults to none.
	StoredTarget func(ctx context.Context) (int64, error)
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
	// a stale rerun is one more), on the running goroutine; a panic in it is
	// logged and recovered. Defaults to nothing.
	OnRun func(ctx context.Context, e Event)
	// Servers, when set, caps the runs per database server across every
	// process and holds back the runs of a server that is DOWN; every
	// connection-level failure of a run is reported to it. Defaults to no
	// limit.
	Servers *servers.Manager

	// History gets a row per migration of a tenant (each Migrate call, and
	// each run failed because the tenant's URL cannot be decrypted: as
	// OnRun), written in one insert before the result is recorded, so a
	// tenant's recorded state always has its run in the history. Defaults to
	// none.
	History History

	// Rollout accounts every run to the active rollout of Latest and
	// refuses runs while it is halted (internal/rollouts). Defaults to
	// none.
	Rollout RolloutHook
	// Logger receives an info record per tenant migrated, per stale rerun
	// and per run interrupted by a shutdown, and a warning when a run's
	// history row could not be written; never a failure of a run, which is
	// returned. Defaults to discarding.
	Logger *slog.Logger
}

// RolloutHook is the rollout accounting of every run, whatever triggered
// it.
type RolloutHook interface {
	// Admit is asked before a tenant is migrated. An error (the rollout to
	// Latest is halted) refuses the run: Run returns it, nothing is run or
	// recorded. rolloutID is the active rollout the tenant is in, "" for
	// none: the run's Request.RolloutID when it has none.
	Admit(ctx context.Context, tenantID string) (rolloutID string, err error)
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
	if cfg.Target == nil {
		latest := cfg.Latest
		cfg.Target = func() int64 { return latest }
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
	// Direction is the way the run goes. Defaults to DirectionUp.
	Direction Direction
	// To is the version a DirectionDown run goes back to, or the version
	// a DirectionForce run records. Ignored for up runs, which aim at
	// Config.Target.
	To int64
	// WaitForServer makes the run wait for a slot of a full server, until
	// WaitContext (defaults to ctx) ends; without it a full server ends the
	// run at once with Outcome.Held. A DOWN server ends it at once either
	// way.
	WaitForServer bool
	WaitContext   context.Context
	// Limit, when set, is a limit of the trigger's own (the gate's inline
	// concurrency), taken after the server slot and released when the
	// migration ends, so that a run never holds it while it waits for a
	// server. Its error ends the run before the migration: Run returns it
	// and records nothing. Defaults to none.
	Limit func(ctx context.Context) (release func(), err error)
	// HoldUnreachable: a run that fails because its server could not be
	// reached (servers.IsConnectionError) records nothing (but for a Down,
	// which may have undone versions already: FAILED at the version it last
	// read) and ends with Outcome.Held, so that the trigger runs it again
	// later without using an attempt (a queued job, a batch). Without it
	// such a failure is recorded like any other.
	HoldUnreachable bool
	// RolloutID is the rollout the run counts toward, for the Event and the
	// history; "" for none. Defaults to the one Config.Rollout admits the
	// tenant's run in.
	RolloutID string
}

// Event is one migration of one tenant, for Config.OnRun.
type Event struct {
	TenantID string
	Trigger  string
	Attempt  int
	// Direction is the run's: up, down or force.
	Direction Direction
	// RolloutID is Request.RolloutID.
	RolloutID string
	// From is the version recorded before the run (nil: never migrated).
	From *int64
	// To is the tenant database's version after the run, -1 when it could
	// not be read.
	To int64
	// Applied are the versions the run applied, in order; for a down run
	// the versions it undid, newest first; none for a force.
	Applied  []int64
	Duration time.Duration
	// Err is the migration's error, nil when it succeeded.
	Err error
	// Started is when the migration started.
	Started time.Time
	// Interrupted reports a run cancelled by a shutdown (Config.Interrupted):
	// nothing is recorded for the tenant.
	Interrupted bool
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
	// recorded or when nothing was to be recorded (an interrupted run, a
	// failure dropped as stale after the last rerun). A success still stale
	// after the last rerun wraps controlplane.ErrStaleResult.
	RecordErr error
	// Server is the tenant's database server ("" when the run did not read
	// the tenant).
	Server string
	// Held, when not nil, says the tenant's server held the run back and
	// nothing was recorded (see Request.HoldUnreachable for a Down): it wraps servers.ErrFull (no slot), is a
	// *servers.DownError, or wraps the connection-level error of a run
	// with Request.HoldUnreachable. The trigger runs the tenant again later.
	Held error
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
	admitted := false // by the rollout to Latest, once per Run
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
		target := min(e.cfg.Target(), e.cfg.Latest)
		// The rollout to Latest counts up runs while no lower target is
		// pinned (a pinned fleet is reached by plain scans, no rollout).
		inRollout := e.cfg.Rollout != nil && cmpOr(req.Direction, DirectionUp) == DirectionUp && target == e.cfg.Latest
		if done, out := e.nothingToDo(req, t, target, rerun); done {
			if out.Err == nil && out.Version >= target && t.MigrationsVersion != nil {
				e.cfg.UpToDate(req.TenantID, req.Generation)
				if inRollout {
					e.rolloutDone(ctx, RolloutResult{TenantID: req.TenantID, Status: controlplane.StatusCompleted})
				}
			}
			return out, nil
		}

		// 2. Limits. A halted rollout to Latest refuses the run. Then a
		// slot of the tenant's server, after the tenant is known and before
		// its connection opens, released when the migration ends.
		if inRollout && !admitted {
			// Once: a rerun after a stale result was admitted already, but
			// one after the target rose to Latest (targetAfter) was not.
			id, err := e.cfg.Rollout.Admit(ctx, req.TenantID)
			if err != nil {
				return Outcome{From: t.MigrationsVersion}, err
			}
			admitted = true
			req.RolloutID = cmpOr(req.RolloutID, id)
		}
		server := servers.Of(t.DatabaseURL, t.Labels)
		release, held, err := e.takeSlot(ctx, req, server)
		if err != nil {
			return Outcome{}, fmt.Errorf("tenant %s: %w", req.TenantID, err)
		}
		if held != nil {
			return Outcome{From: t.MigrationsVersion, Version: versionOf(t), Server: server, Held: held}, nil
		}

		// 3. Migrate (up to the target), undo or force.
		started := time.Now()
		res, err := e.migrate(ctx, req, t, target)
		release()
		if errors.Is(err, errTargetLowered) {
			switch {
			case len(res.Applied) > 0:
				// The check of a later lock of this run (Migrate takes the
				// lock again to retry a catalog conflict) found the target
				// lowered: the run stopped there, and what it applied before
				// stands, recorded as its success (and named: warnAbovePin).
				err = nil
			case rerun < MaxStaleReruns && ctx.Err() == nil:
				e.cfg.Logger.Info("fleet target lowered before the run took the tenant's lock; nothing applied, running it again",
					slog.String("tenant_id", req.TenantID), slog.String("trigger", req.Trigger))
				continue
			default:
				// Lowered again and again: nothing ran and nothing is
				// recorded; the caller gets the error (a request is not
				// served on it, a job goes again).
				return Outcome{From: t.MigrationsVersion, Version: versionOf(t), Err: err, Server: server}, nil
			}
		}
		out := Outcome{Ran: true, From: t.MigrationsVersion, Version: res.Version, Applied: res.Applied, Duration: res.Duration, Err: err, Server: server}
		unreachable := e.reportServer(ctx, server, err)
		interrupted := err != nil && e.cfg.Interrupted(ctx)

		// 4. Record: checksums first (they are true whatever the state).
		e.cfg.RecordChecksums(ctx, res.Applied)
		// 5. Report: the history row, then the hook, before the result.
		e.report(ctx, req, out, started, interrupted, t.DatabaseURL, t.TargetSeq)

		attrs := []any{slog.String("tenant_id", req.TenantID), slog.Int64("version", res.Version), slog.String("trigger", req.Trigger)}
		if req.Direction != "" && req.Direction != DirectionUp {
			attrs = append(attrs, slog.String("direction", string(req.Direction)))
		}
		if req.Attempt > 0 {
			attrs = append(attrs, slog.Int("attempt", req.Attempt))
		}
		if err == nil {
			if rerr := e.recordSuccess(ctx, t, res.Version); rerr != nil {
				if errors.Is(rerr, controlplane.ErrStaleResult) && rerun < MaxStaleReruns && ctx.Err() == nil {
					e.cfg.Logger.Info("tenant changed during its run; result not recorded, running it again", attrs...)
					continue
				}
				// Still stale after the last rerun: what another run recorded
				// stands, and this success is not confirmed for the tenant as
				// it is now, so the caller gets the error (a request is not
				// served on it).
				out.RecordErr = rerr
				return out, nil
			}
			e.cfg.Logger.Info("tenant migrated", append(attrs, "applied", len(res.Applied), "duration_ms", res.Duration.Milliseconds())...)
			stored, read := e.targetAfter(ctx, req, target, res)
			if read && len(res.Applied) > 0 && stored < res.Version && stored < target {
				e.warnAbovePin(ctx, req, res, stored)
			}
			if res.Version >= target {
				e.cfg.UpToDate(req.TenantID, req.Generation)
			}
			if inRollout && res.Version >= target {
				e.rolloutDone(ctx, RolloutResult{TenantID: req.TenantID, Status: controlplane.StatusCompleted, Duration: res.Duration})
			}
			if read && stored > target && stored > res.Version && rerun < MaxStaleReruns && ctx.Err() == nil {
				// A scan or request for the raised target found this run's
				// job (or flight) live and added none: this run goes on.
				e.cfg.Logger.Info("fleet target raised during the run; running it again", attrs...)
				continue
			}
			return out, nil
		}

		if req.Direction == DirectionDown && (interrupted || (unreachable && req.HoldUnreachable)) {
			// A Down that stopped may have undone versions before it did
			// (committed, perhaps unreported): the tenant must not stay
			// recorded at the version it had, which it may lack now. It is
			// recorded FAILED at the version the run last saw, or at the one
			// it had, and the rollback's next attempt (or an up run) moves it
			// on from there.
			_ = e.recordFailure(ctx, t, res, controlplane.StatusFailed, err)
		}
		if unreachable && req.HoldUnreachable && !interrupted {
			// The server's failure, not the tenant's: no attempt, no state.
			out.Held = fmt.Errorf("database server %s unreachable: %w", server, err)
			return out, nil
		}
		if interrupted {
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
			if inRollout {
				e.rolloutDone(ctx, failedResult(req.TenantID, status, res.Duration, err))
			}
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
	e.report(ctx, req, out, time.Now(), false, "", t.TargetSeq) // the error names no secret
	if e.atTarget(t, min(e.cfg.Target(), e.cfg.Latest)) || e.newerRelease(t.MigrationsVersion) {
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

// takeSlot takes a slot of server for req, then req.Limit, and returns
// what releases both. It returns the reason the server holds the run back
// (full, DOWN) as held, and an error when the control plane could not be
// asked or req.Limit failed.
func (e *Executor) takeSlot(ctx context.Context, req Request, server string) (release func(), held, err error) {
	var slot *servers.Slot // Release of a nil Slot does nothing
	if e.cfg.Servers != nil && server != "" {
		waitCtx := ctx
		if req.WaitContext != nil {
			waitCtx = req.WaitContext
		}
		slot, err = e.cfg.Servers.Take(waitCtx, server, req.WaitForServer)
		if errors.Is(err, servers.ErrFull) || errors.Is(err, servers.ErrDown) {
			return nil, err, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if req.Limit == nil {
		return func() { slot.Release(ctx) }, nil, nil
	}
	done, err := req.Limit(ctx)
	if err != nil {
		slot.Release(ctx)
		return nil, nil, err
	}
	return func() { done(); slot.Release(ctx) }, nil, nil
}

// reportServer tells the server tracker whether a run reached its server,
// and reports whether err is a connection-level failure (never a failed
// migration).
func (e *Executor) reportServer(ctx context.Context, server string, err error) bool {
	var applyErr *migrator.ApplyError
	unreachable := err != nil && !errors.As(err, &applyErr) && servers.IsConnectionError(err)
	if e.cfg.Servers == nil || server == "" || e.cfg.Interrupted(ctx) {
		return unreachable
	}
	var rerr error
	if unreachable {
		_, rerr = e.cfg.Servers.ReportFailure(ctx, server, err)
	} else {
		rerr = e.cfg.Servers.ReportReachable(ctx, server)
	}
	if rerr != nil {
		e.cfg.Logger.Warn("record database server state", "server", server, "err", rerr)
	}
	return unreachable
}

// versionOf is the recorded version of t, -1 when none is.
func versionOf(t controlplane.Tenant) int64 {
	if t.MigrationsVersion == nil {
		return -1
	}
	return *t.MigrationsVersion
}

// report reports one run of a tenant that started at started on the
// tenant database at databaseURL: its history row, then Config.OnRun.
func (e *Executor) report(ctx context.Context, req Request, out Outcome, started time.Time, interrupted bool, databaseURL string, targetSeq int64) {
	ev := Event{
		TenantID:    req.TenantID,
		Trigger:     req.Trigger,
		Attempt:     req.Attempt,
		RolloutID:   req.RolloutID,
		Direction:   cmpOr(req.Direction, DirectionUp),
		From:        out.From,
		To:          out.Version,
		Applied:     out.Applied,
		Duration:    out.Duration,
		Err:         out.Err,
		Started:     started,
		Interrupted: interrupted,
	}
	e.recordHistory(ctx, ev, databaseURL, targetSeq)
	e.onRun(ctx, ev)
}

// onRun calls Config.OnRun. A panic in it is logged and goes no further: the
// run's result is still recorded, and a hook's bug does not end the process
// (an inline run's goroutine has nothing above it that recovers).
func (e *Executor) onRun(ctx context.Context, ev Event) {
	if e.cfg.OnRun == nil {
		return
	}
	defer func() {
		if p := recover(); p != nil {
			e.cfg.Logger.ErrorContext(ctx, "run hook panicked; the run's result is recorded as usual",
				"tenant_id", ev.TenantID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	e.cfg.OnRun(ctx, ev)
}

// recordHistory writes the history row of ev, a run on the tenant database
// at databaseURL (whose passwords are masked in the error), even when the
// run's ctx has ended (an interrupted run). A failure is logged: the run
// itself is not failed for it.
func (e *Executor) recordHistory(ctx context.Context, ev Event, databaseURL string, targetSeq int64) {
	if e.cfg.History == nil {
		return
	}
	r := history.Run{
		TenantID:    ev.TenantID,
		RolloutID:   ev.RolloutID,
		FromVersion: ev.From,
		Direction:   string(ev.Direction),
		Result:      history.ResultCompleted,
		Attempt:     ev.Attempt,
		StartedAt:   ev.Started,
		FinishedAt:  time.Now(),
		Trigger:     ev.Trigger,
	}
	if ev.To >= 0 {
		r.ToVersion = &ev.To
	}
	if ev.Err != nil {
		r.Result = history.ResultFailed
		if ev.Interrupted {
			r.Result = history.ResultInterrupted
		}
		r.Error = redact.String(ev.Err.Error(), databaseURL)
	}
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	if err := e.cfg.History.RecordOnTarget(ctx, r, targetSeq); err != nil {
		e.cfg.Logger.Warn("run history not written", slog.String("tenant_id", ev.TenantID), slog.String("err", err.Error()))
	}
}

// AtTarget reports whether t is recorded COMPLETED at the target up runs
// aim at now (or above it).
func (e *Executor) AtTarget(t controlplane.Tenant) bool {
	return e.atTarget(t, min(e.cfg.Target(), e.cfg.Latest))
}

func (e *Executor) atTarget(t controlplane.Tenant, target int64) bool {
	return t.MigrationsVersion != nil && *t.MigrationsVersion >= target && t.MigrationsStatus == controlplane.StatusCompleted
}

// ErrNewerRelease is wrapped by the Outcome.Err of a down run of a tenant
// recorded above Latest: an instance of a newer release must run it.
var ErrNewerRelease = errors.New("above this source's latest")

// nothingToDo reports whether the run of t ends before it starts, and with
// what: an up run of a tenant at the target (SkipAtLatest, a stale rerun),
// at a pinned target of 0, or of a newer release's tenant; a down run of a
// tenant recorded COMPLETED at or below Request.To or never migrated. A
// down run of a newer release's tenant fails, recording nothing: the Down
// sections of its newer versions are not in this source.
func (e *Executor) nothingToDo(req Request, t controlplane.Tenant, target int64, rerun int) (bool, Outcome) {
	out := Outcome{From: t.MigrationsVersion}
	if t.MigrationsVersion != nil {
		out.Version = *t.MigrationsVersion
	}
	switch req.Direction {
	case DirectionForce:
		return false, out
	case DirectionDown:
		if e.newerRelease(t.MigrationsVersion) {
			out.Err = fmt.Errorf("tenant %s is at version %d, %w %d: the Down sections of its newer versions are not in this source", t.ID, out.Version, ErrNewerRelease, e.cfg.Latest)
			return true, out
		}
		below := t.MigrationsVersion == nil ||
			(*t.MigrationsVersion <= req.To && t.MigrationsStatus == controlplane.StatusCompleted)
		return below, out
	}
	if e.newerRelease(t.MigrationsVersion) || ((req.SkipAtLatest || rerun > 0) && e.atTarget(t, target)) {
		return true, out
	}
	// A fleet pinned at 0 applies nothing, to no tenant.
	return target == 0 && e.cfg.Latest > 0, out
}

// migrate runs req's direction on t.
func (e *Executor) migrate(ctx context.Context, req Request, t controlplane.Tenant, target int64) (migrator.Result, error) {
	mt := migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema}
	switch req.Direction {
	case DirectionDown:
		return e.cfg.Migrator.Down(ctx, mt, req.To)
	case DirectionForce:
		return e.cfg.Migrator.Force(ctx, mt, req.To)
	}
	if target < e.cfg.Latest {
		mt.UpTo = target
	}
	if e.cfg.StoredTarget != nil {
		mt.CheckUpTo = func(ctx context.Context) error {
			stored, err := e.cfg.StoredTarget(ctx)
			if err != nil {
				// The control plane did not answer: the run goes on to the
				// target it read, as before this check. Failing it would
				// record a control-plane blip as the tenant's failure (and
				// its connection error as the tenant server's); a pin set
				// meanwhile also needs the control plane to undo the tenant.
				e.cfg.Logger.WarnContext(ctx, "could not read the fleet target again under the tenant's lock; migrating to the target read before",
					"tenant_id", req.TenantID, "version", target, "err", err)
				return nil
			}
			if stored < target {
				return fmt.Errorf("%w: from %d to %d", errTargetLowered, target, stored)
			}
			return nil
		}
	}
	return e.cfg.Migrator.Migrate(ctx, mt)
}

// targetAfter reads the fleet target as stored now, once, after an up run's
// success, when a check needs it: a run that applied versions may have ended
// above a pin set while it applied them (warnAbovePin), and one that aimed
// below Latest may find the target raised meanwhile (a scan's enqueue for
// the raised target was deduped against this run's live job, so the run
// goes on). read is false when nothing needed it, or it could not be read.
func (e *Executor) targetAfter(ctx context.Context, req Request, target int64, res migrator.Result) (stored int64, read bool) {
	if e.cfg.StoredTarget == nil || req.Direction != "" && req.Direction != DirectionUp {
		return 0, false
	}
	if len(res.Applied) == 0 && (target >= e.cfg.Latest || res.Version >= e.cfg.Latest) {
		return 0, false
	}
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	stored, err := e.cfg.StoredTarget(ctx)
	return stored, err == nil
}

// warnAbovePin logs an error for an up run that applied versions and ended
// above the fleet target stored now, stored, which was lowered while the
// run applied them (after its check under the tenant's lock). A rollback
// that pinned that target selected its tenants by their recorded versions,
// and this tenant's was still the one before the run: it missed the tenant,
// which the operator must roll back again.
func (e *Executor) warnAbovePin(ctx context.Context, req Request, res migrator.Result, stored int64) {
	e.cfg.Logger.ErrorContext(ctx, "tenant migrated above the fleet target, which was pinned while its migration ran: "+
		"a rollback that selected tenants meanwhile missed it; roll it back again (tenantmigrate rollback --to "+strconv.FormatInt(stored, 10)+" --tenant "+req.TenantID+")",
		"tenant_id", req.TenantID, "version", res.Version, "target", stored)
}

// errTargetLowered ends an up run, with nothing applied, whose target was
// lowered after it was read (Config.StoredTarget).
var errTargetLowered = errors.New("the fleet target was lowered since the run read it")

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// newerRelease reports whether a tenant recorded at version belongs to a
// newer release than this one's: a rolling deploy runs both, this release's
// migrations are all applied to it, and this release must neither run it
// (its source lacks the newer versions) nor record over the newer state.
func (e *Executor) newerRelease(version *int64) bool {
	return version != nil && *version > e.cfg.Latest
}

// recordSuccess records a successful run of t (as it was read before the
// run) at version, even when ctx has ended: the migration committed.
func (e *Executor) recordSuccess(ctx context.Context, t controlplane.Tenant, version int64) error {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	return e.cfg.Store.RecordSuccess(ctx, t.ID, controlplane.OriginOf(t), version)
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
