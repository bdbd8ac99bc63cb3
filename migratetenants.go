package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

// This file runs a migration over a selection of tenants in this process:
// MigrateTenants, the engine of the CLI's migrate and demo. Each tenant goes
// through the one executor (run.go), as a request or a queued job would.

// Defaults of MigrateOptions.
const (
	// DefaultMigrateConcurrency is the default of MigrateOptions.Concurrency:
	// each run holds DDL on its tenant's database host, and 4 keeps a 2-4
	// core host busy without queueing DDL behind DDL.
	DefaultMigrateConcurrency = 4
	// DefaultMigrateRetryBackoff is the default of MigrateOptions.RetryBackoff.
	DefaultMigrateRetryBackoff = time.Second
)

// scanPageSize is how many tenant ids one control-plane read returns.
const scanPageSize = 1000

// Selection says which tenants MigrateTenants runs: the IDs first, in their
// order, then (with AllBehind) every tenant behind the latest version, in
// cursor order. A tenant is selected once.
type Selection struct {
	// IDs are run whatever their state (a tenant COMPLETED at the latest
	// version is run too: the run checks its database).
	IDs []string
	// AllBehind adds every tenant whose version is unknown or below Latest,
	// or that is FAILED (at the latest version too: its run failed after the
	// last migration committed), but not FAILED_STALE ones.
	AllBehind bool
	// IncludeStale adds the FAILED_STALE tenants to AllBehind.
	IncludeStale bool
}

// selected is one tenant of a Selection.
type selected struct {
	id       string
	explicit bool // from Selection.IDs
	// direction and to say what the run does: up to the target (the zero
	// value), down to to (rollback.go) or force to to (force.go).
	direction run.Direction
	to        int64
	rollout   bool // claimed from the rollout: a final failure is FAILED_STALE
}

// selection walks sel a page of ids at a time (no URL is decrypted, and
// memory does not grow with the fleet).
func (o *Orchestrator) selection(ctx context.Context, sel Selection) iter.Seq2[selected, error] {
	var scan func(cursor int64) ([]string, int64, error)
	if sel.AllBehind {
		scan = func(cursor int64) ([]string, int64, error) {
			return o.store.ScanBehind(ctx, o.Target(), sel.IncludeStale, cursor, scanPageSize)
		}
	}
	return namedThenScanned(sel.IDs, selected{}, scan, func(id string) string { return id })
}

// namedThenScanned is the walk of a batch selection (migrate, force,
// rollback): the named ids first, each once, marked explicit, then, unless
// scan is nil, the ids of the pages scan reads (from cursor 0 until its
// next cursor is 0) that were not named. Each is base with its id. A scan
// that fails yields its error and ends the walk.
func namedThenScanned[T any](named []string, base selected, scan func(cursor int64) ([]T, int64, error), idOf func(T) string) iter.Seq2[selected, error] {
	return func(yield func(selected, error) bool) {
		seen := make(map[string]bool, len(named))
		for _, id := range named {
			if seen[id] {
				continue
			}
			seen[id] = true
			s := base
			s.id, s.explicit = id, true
			if !yield(s, nil) {
				return
			}
		}
		if scan == nil {
			return
		}
		for cursor := int64(0); ; {
			page, next, err := scan(cursor)
			if err != nil {
				yield(selected{}, err)
				return
			}
			for _, t := range page {
				id := idOf(t)
				if seen[id] {
					continue
				}
				s := base
				s.id = id
				if !yield(s, nil) {
					return
				}
			}
			if next == 0 {
				return
			}
			cursor = next
		}
	}
}

// SelectTenants yields the ids MigrateTenants would run now for sel, in its
// order, reading the control plane a page at a time. A read that fails
// yields its error and ends the sequence.
func (o *Orchestrator) SelectTenants(ctx context.Context, sel Selection) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		for s, err := range o.selection(ctx, sel) {
			if !yield(s.id, err) {
				return
			}
		}
	}
}

// MigrateOptions tune MigrateTenants. The zero value of each field means its
// default.
type MigrateOptions struct {
	// Concurrency is how many tenants are run at once. Defaults to
	// DefaultMigrateConcurrency.
	Concurrency int
	// Retries is how many more attempts a tenant gets after a failure that is
	// likely transient (the tenant lock's timeout, a lost connection, a
	// deadlock, a serialization failure, too many connections, ...: what
	// queued jobs retry too). Defaults to 0: none.
	Retries int
	// RetryBackoff is the wait before a tenant's first retry; it doubles
	// for each one after. Defaults to DefaultMigrateRetryBackoff; negative
	// means no wait.
	RetryBackoff time.Duration
	// OnProgress, when set, is told of each step (see MigrateProgress).
	// Calls never overlap; they block the worker that makes them, so keep
	// them short.
	OnProgress func(ctx context.Context, p MigrateProgress)
}

// ProgressKind is the kind of a MigrateProgress.
type ProgressKind string

// Kinds of MigrateProgress.
const (
	// ProgressSelected: a tenant was selected and handed to a worker.
	ProgressSelected ProgressKind = "selected"
	// ProgressRetry: an attempt failed with a transient error; the tenant is
	// run again after Wait.
	ProgressRetry ProgressKind = "retry"
	// ProgressDone: the tenant is finished, COMPLETED when Err is nil.
	ProgressDone ProgressKind = "done"
)

// MigrateProgress is one step of MigrateTenants.
type MigrateProgress struct {
	Kind     ProgressKind
	TenantID string
	// Selected is how many tenants were selected so far.
	Selected int64
	// Attempt is the attempt that ended (ProgressRetry, ProgressDone), from 1.
	Attempt int
	// Version is the tenant's version after the attempt (ProgressDone),
	// -1 when a failed run could not read it.
	Version int64
	// Err is the attempt's error: a *MigrationError for a failed migration,
	// an error wrapping ErrTenantNotFound for a tenant removed meanwhile
	// (Removed), nil when the tenant is COMPLETED.
	Err error
	// Removed reports a tenant removed from the control plane since it was
	// selected (or one of Selection.IDs that it never listed): no failure.
	Removed bool
	// Wait is the wait before the next attempt (ProgressRetry).
	Wait time.Duration
}

// MigrateResult is what MigrateTenants did.
type MigrateResult struct {
	// Selected counts the tenants handed to workers; each ended Completed,
	// Failed or Removed.
	Selected, Completed, Failed, Removed int64
	// Retried counts the tenants that needed more than one attempt.
	Retried int64
	// Interrupted reports that ctx ended before every selected tenant was
	// started: the ones not started were left as they are.
	Interrupted bool
	Duration    time.Duration
	// Rollout is the rollout AllBehind ran (see MigrateTenants), as it was
	// at the end; nil when none did.
	Rollout *Rollout
	// Halted is set when that rollout was halted, by this run or another
	// process: no tenant was started after it.
	Halted *RolloutHaltedError
}

// validate refuses options that no run could use.
func (opts MigrateOptions) validate() error {
	if opts.Concurrency < 0 {
		return fmt.Errorf("%w: MigrateOptions.Concurrency is %d: want 0 (the default) or more", ErrInvalidConfig, opts.Concurrency)
	}
	if opts.Retries < 0 {
		return fmt.Errorf("%w: MigrateOptions.Retries is %d: want 0 or more", ErrInvalidConfig, opts.Retries)
	}
	return nil
}

// OK reports whether every selected tenant ended COMPLETED (or was removed
// meanwhile) and no rollout halted.
func (r MigrateResult) OK() bool { return r.Failed == 0 && !r.Interrupted && r.Halted == nil }

// MigrateTenants migrates the tenants of sel now, in this process,
// opts.Concurrency at a time, and records each result as a request or a
// queued job would: COMPLETED, or FAILED with the error. It is safe while
// servers run: every run holds the tenant's lock. A failure that is likely
// transient is retried opts.Retries times. The tenants' errors are not
// returned or logged: they go to opts.OnProgress (ProgressDone) and are
// counted in the result, and the control plane records them.
//
// When ctx ends, no new tenant (and no retry) is started, but the running
// ones finish: a migration holds the tenant's lock and may run statements
// that are not transactional. Stop waits for them like for inline runs.
//
// It returns ErrReadOnly on a ReadOnly Orchestrator, and an error when
// reading the selection from the control plane failed, with what was done
// until then.
func (o *Orchestrator) MigrateTenants(ctx context.Context, sel Selection, opts MigrateOptions) (MigrateResult, error) {
	if o.cfg.ReadOnly {
		return MigrateResult{}, ErrReadOnly
	}
	if err := opts.validate(); err != nil {
		return MigrateResult{}, err
	}
	// AllBehind runs the rollout to the latest version, created now if
	// needed: its waves, in its order, halting with it.
	source := o.selection(ctx, sel)
	var rollout *Rollout
	if sel.AllBehind && o.Target() >= o.latest { // a pinned fleet has no rollout
		r, created, err := o.startRollout(ctx, "migrate --all", sel.IncludeStale)
		if err != nil {
			return MigrateResult{}, fmt.Errorf("start rollout: %w", err)
		}
		if r != nil && r.State.Active() && !created {
			// The tenants behind that it lacks (registered since it began)
			// join its last wave, as a fleet scan adds them: otherwise this
			// run would end with the rollout and leave them behind.
			_, active, err := o.rollouts.AddLate(ctx, o.latest, sel.IncludeStale)
			if err != nil {
				return MigrateResult{}, fmt.Errorf("start rollout: %w", err)
			}
			if !active {
				// It ended since it was read. Completed (its last tenant
				// finished) or aborted, this run migrates the tenants behind
				// itself, as it does after either; superseded by a newer
				// release, it follows the rollout, which ends at once.
				cur, err := o.rollouts.Get(ctx, r.ID)
				if err != nil {
					return MigrateResult{}, fmt.Errorf("start rollout: %w", err)
				}
				if cur.State == RolloutCompleted || cur.State == RolloutAborted {
					r = cur
				}
			}
		}
		if r != nil && r.State.Active() {
			// While this run lives its claims are its own; if it dies, the
			// lock goes with its session and other processes take them
			// over at once.
			claimer, err := o.rollouts.NewClaimer(ctx)
			if err != nil {
				return MigrateResult{}, err
			}
			defer claimer.Release(ctx)
			rollout = r
			// The selection stops waiting for the wave when this batch has
			// nothing running and gave up a tenant of a server that is down
			// (nothing recorded: the wave cannot end until it is back).
			var inflight, gaveUp atomic.Int64
			idle := func() bool { return inflight.Load() == 0 }
			stuck := func() bool { return idle() && gaveUp.Load() > 0 }
			// The tenants that failed here: the scan that follows a rollout
			// that ended meanwhile does not run them a second time.
			var failedMu sync.Mutex
			failed := map[string]bool{}
			ranHere := func(id string) bool {
				failedMu.Lock()
				defer failedMu.Unlock()
				return failed[id]
			}
			source = countYields(o.rolloutSelection(ctx, sel.IDs, sel.IncludeStale, claimer.Key, idle, stuck, ranHere), &inflight)
			onProgress := opts.OnProgress
			opts.OnProgress = func(ctx context.Context, p MigrateProgress) {
				if p.Kind == ProgressDone {
					var gu *serverGaveUpError
					if errors.As(p.Err, &gu) {
						gaveUp.Add(1)
					}
					if p.Err != nil && !p.Removed {
						failedMu.Lock()
						failed[p.TenantID] = true
						failedMu.Unlock()
					}
					inflight.Add(-1)
				}
				if onProgress != nil {
					onProgress(ctx, p)
				}
			}
		}
	}

	return o.runBatch(ctx, source, rollout, opts)
}

// countYields counts the tenants seq yields in n (a tenant's ProgressDone
// takes it off again).
func countYields(seq iter.Seq2[selected, error], n *atomic.Int64) iter.Seq2[selected, error] {
	return func(yield func(selected, error) bool) {
		for s, err := range seq {
			if err == nil {
				n.Add(1)
			}
			if !yield(s, err) {
				return
			}
		}
	}
}

// runBatch runs the tenants of source, each as its selected says (up, down
// or force), as MigrateTenants describes; rollout, when not nil, is the
// rollout they were claimed from.
func (o *Orchestrator) runBatch(ctx context.Context, source iter.Seq2[selected, error], rollout *Rollout, opts MigrateOptions) (MigrateResult, error) {
	if err := opts.validate(); err != nil {
		return MigrateResult{}, err
	}
	// This process heartbeats while it migrates (instances.go).
	if err := o.holdHeartbeat(ctx); err != nil {
		return MigrateResult{}, fmt.Errorf("start instance heartbeat: %w", err)
	}
	defer func() {
		stopCtx, cancel := cleanupCtx(ctx)
		defer cancel()
		if err := o.releaseHeartbeat(stopCtx); err != nil {
			o.logger.Warn("stop instance heartbeat", "err", err)
		}
	}()
	start := time.Now()
	var (
		mu      sync.Mutex // guards res and serialises OnProgress
		res     MigrateResult
		scanErr error
	)
	progress := func(p MigrateProgress) {
		if opts.OnProgress != nil {
			opts.OnProgress(ctx, p)
		}
	}

	work := make(chan selected)
	var eg errgroup.Group
	eg.Go(func() error {
		defer close(work)
		for s, err := range source {
			if err != nil {
				mu.Lock()
				if ctx.Err() != nil {
					res.Interrupted = true
				} else {
					scanErr = err
				}
				mu.Unlock()
				return nil
			}
			select {
			case work <- s:
			case <-ctx.Done():
				mu.Lock()
				res.Interrupted = true
				mu.Unlock()
				return nil
			}
			mu.Lock()
			res.Selected++
			progress(MigrateProgress{Kind: ProgressSelected, TenantID: s.id, Selected: res.Selected})
			mu.Unlock()
		}
		return nil
	})
	for range cmpOr(opts.Concurrency, DefaultMigrateConcurrency) {
		eg.Go(func() error {
			for s := range work {
				o.migrateWithRetry(ctx, s, opts, func(p MigrateProgress) {
					mu.Lock()
					defer mu.Unlock()
					if p.Kind == ProgressDone {
						if p.Attempt > 1 {
							res.Retried++
						}
						switch {
						case p.Removed:
							res.Removed++
						case p.Err != nil:
							res.Failed++
						default:
							res.Completed++
						}
					}
					p.Selected = res.Selected
					progress(p)
				})
			}
			return nil
		})
	}
	_ = eg.Wait() // the goroutines record their errors in res
	res.Duration = time.Since(start)
	if rollout != nil {
		rctx, cancel := cleanupCtx(ctx)
		defer cancel()
		if r, err := o.rollouts.Get(rctx, rollout.ID); err == nil {
			res.Rollout = r
			if r.State == RolloutHalted {
				res.Halted = &RolloutHaltedError{RolloutID: r.ID, TargetVersion: r.TargetVersion, Reason: r.HaltReason}
			}
		}
	}
	if scanErr != nil {
		return res, fmt.Errorf("select tenants: %w", scanErr)
	}
	return res, nil
}

// migrateWithRetry runs one selected tenant, trying again after a retryable
// failure (migrator.IsRetryable) up to opts.Retries times, after
// opts.RetryBackoff and then doubling waits, and reports each attempt's end
// to report. The waits end with ctx; the runs do not.
func (o *Orchestrator) migrateWithRetry(ctx context.Context, s selected, opts MigrateOptions, report func(MigrateProgress)) {
	wait := cmpOr(opts.RetryBackoff, DefaultMigrateRetryBackoff)
	for attempt := 1; ; attempt++ {
		v, err := o.batchAttemptHeld(ctx, s, attempt, attempt > opts.Retries)
		if err == nil || attempt > opts.Retries || !migrator.IsRetryable(err) || ctx.Err() != nil {
			report(MigrateProgress{Kind: ProgressDone, TenantID: s.id, Attempt: attempt, Version: v, Err: err,
				Removed: errors.Is(err, ErrTenantNotFound)})
			return
		}
		wait = max(wait, 0)
		report(MigrateProgress{Kind: ProgressRetry, TenantID: s.id, Attempt: attempt, Version: v, Err: err, Wait: wait})
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			report(MigrateProgress{Kind: ProgressDone, TenantID: s.id, Attempt: attempt, Version: v, Err: err})
			return
		case <-timer.C:
		}
		wait *= 2
	}
}

// batchAttemptHeld is one attempt of MigrateTenants on one tenant, run again
// while its server holds it back: while the server is unreachable or DOWN
// for up to Config.Servers.DownTimeout (then it fails with the server's
// *ServerDownError, or the connection error of a server not marked DOWN),
// and while the server is full until ctx ends. Waiting, this process
// probes the DOWN server when its probe is due, so a batch needs no other
// process to see it come UP.
func (o *Orchestrator) batchAttemptHeld(ctx context.Context, s selected, attempt int, last bool) (int64, error) {
	var deadline time.Time
	for {
		v, held, err := o.batchAttempt(ctx, s, attempt, last)
		if held == nil {
			return v, err
		}
		if errors.Is(held, servers.ErrFull) { // ctx ended while waiting for a slot
			return v, fmt.Errorf("tenant %s: %w", s.id, held)
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(cmpOr(o.cfg.Servers.DownTimeout, DefaultServerDownTimeout))
		}
		var he *heldError
		errors.As(held, &he)
		if werr := o.waitServer(ctx, he.server, deadline, he.err); werr != nil {
			if ctx.Err() != nil {
				return v, fmt.Errorf("tenant %s: %w", s.id, held)
			}
			return v, &serverGaveUpError{fmt.Errorf("tenant %s: %w", s.id, werr)}
		}
	}
}

// serverGaveUpError is the error of a tenant given up because its server
// stayed DOWN or unreachable for Config.Servers.DownTimeout: nothing was
// recorded for it, so a rollout's wave that holds it does not end.
type serverGaveUpError struct{ err error }

func (e *serverGaveUpError) Error() string { return e.err.Error() }
func (e *serverGaveUpError) Unwrap() error { return e.err }

// heldError carries the server of a held run.
type heldError struct {
	server string
	err    error
}

func (e *heldError) Error() string { return e.err.Error() }
func (e *heldError) Unwrap() error { return e.err }

// waitServer waits until server may be tried again: it is not DOWN (any
// more), or its probe ran from here; at least a second between tries. It
// returns the server's *ServerDownError when deadline passes with the
// server DOWN, an error for a deadline passed with it merely unreachable,
// and ctx's error when ctx ends.
func (o *Orchestrator) waitServer(ctx context.Context, server string, deadline time.Time, last error) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if !time.Now().Before(deadline) {
			down, err := o.servers.IsDown(ctx, server)
			if err == nil && down != nil {
				return down
			}
			return fmt.Errorf("database server %s still unreachable after %s: %w", server, cmpOr(o.cfg.Servers.DownTimeout, DefaultServerDownTimeout), last)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
		down, err := o.servers.IsDown(ctx, server)
		if err != nil || down == nil {
			return nil // UP (or unknown: the next try finds out)
		}
		if probed, err := o.servers.ProbeIfDue(ctx, server); err == nil && probed {
			if down, err := o.servers.IsDown(ctx, server); err == nil && down == nil {
				return nil
			}
		}
	}
}

// batchAttempt is one attempt of MigrateTenants on one tenant: a run that
// Stop waits for, under a context that ctx does not cancel. held is the
// reason the tenant's server held the run back, nil when it ran; last says
// it is the tenant's last attempt.
func (o *Orchestrator) batchAttempt(ctx context.Context, s selected, attempt int, last bool) (v int64, held, err error) {
	runCtx, done := o.runs.add(context.WithoutCancel(ctx))
	defer done()
	runCtx, cancel := o.withInlineTimeout(runCtx)
	defer cancel()
	out, err := o.exec.Run(runCtx, run.Request{
		TenantID:   s.id,
		Trigger:    string(TriggerBatch),
		Attempt:    attempt,
		Generation: o.cache.generation(),
		// A scanned tenant that a server migrated since costs no tenant
		// connection; a named one is checked in its database.
		SkipAtLatest: !s.explicit,
		FailStatus: func(err error) controlplane.Status {
			// A rollout's tenant fails in it for good (FAILED_STALE) after
			// its last attempt, as a queued job's does; never for its
			// server stopping or starting (servers.IsShutdown).
			if s.rollout && !servers.IsShutdown(err) && (last || !migrator.IsRetryable(err)) {
				return controlplane.StatusFailedStale
			}
			return controlplane.StatusFailed
		},
		Direction:       s.direction,
		To:              s.to,
		WaitForServer:   true,
		WaitContext:     ctx, // no new run once the batch is interrupted
		HoldUnreachable: true,
	})
	if err != nil {
		return 0, nil, err
	}
	if out.Held != nil {
		return out.Version, &heldError{server: out.Server, err: out.Held}, nil
	}
	return out.Version, nil, outcomeErr(s.id, out)
}
