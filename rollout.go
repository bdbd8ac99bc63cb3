package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/rollouts"
	"github.com/tenantmigrate/tenantmigrate/internal/run"
)

// This file is the façade of internal/rollouts: the rollout a release's
// fleet scan, migrate --all or the admin API creates, its accounting in the
// one executor (rolloutHook), and what operators read and control.

// Defaults of RolloutConfig.
const (
	// DefaultHaltFailureRate is the default of RolloutConfig.HaltFailureRate.
	DefaultHaltFailureRate = rollouts.DefaultHaltFailureRate
	// DefaultRolloutFeedBatch is the default of RolloutConfig.FeedBatchSize.
	DefaultRolloutFeedBatch = rollouts.DefaultFeedBatch
)

// RolloutConfig is Config.Rollout: how a rollout this instance creates is
// cut into waves and when it halts. A rollout keeps the settings it was
// created with. The zero value of each field means its default.
type RolloutConfig struct {
	// Waves are the cumulative wave sizes, counts or percentages of the
	// tenants behind at the start, comma-separated: "5,10%,100%" (a final
	// 100% is implied; "100%" is one wave). The canary wave, when
	// CanarySelector matches tenants, comes before them. A bad value is an
	// error wrapping ErrInvalidConfig. Defaults to "": a first wave of 1% of
	// the tenants behind (at least 1, at most 50), then the rest.
	Waves string

	// CanarySelector is a label selector (see ListTenantsMatching); the
	// tenants behind that match it are the first wave. Defaults to "":
	// none.
	CanarySelector string

	// HaltFailureRate halts the rollout as soon as a wave's failed tenants
	// (ending FAILED_STALE) exceed HaltFailureRate × the wave's size,
	// rounded down: at 5%, the first failure of a wave under 20 tenants
	// halts. 1 (100%) never halts; a negative value is a rate of 0. Above 1
	// is an error. Defaults to DefaultHaltFailureRate (0.05).
	HaltFailureRate float64

	// WavePause is the wait between a wave passing and the next one
	// starting. Negative is an error. Defaults to 0.
	WavePause time.Duration

	// FeedBatchSize is how many tenants of the rollout an instance queues
	// at once; it queues a batch whenever fewer than that are in flight, so
	// the queue holds at most 2×FeedBatchSize live jobs of the rollout.
	// Negative is an error. Defaults to DefaultRolloutFeedBatch (100).
	FeedBatchSize int
}

func (c RolloutConfig) validate() error {
	if _, err := rollouts.ParseWaves(c.Waves); err != nil {
		return fmt.Errorf("%w: Rollout.Waves: %v", ErrInvalidConfig, err)
	}
	if err := ValidateSelector(c.CanarySelector); err != nil {
		return fmt.Errorf("%w: Rollout.CanarySelector: %v", ErrInvalidConfig, err)
	}
	switch {
	case c.HaltFailureRate > 1:
		return fmt.Errorf("%w: Rollout.HaltFailureRate is %g: want at most 1 (100%%)", ErrInvalidConfig, c.HaltFailureRate)
	case c.WavePause < 0:
		return fmt.Errorf("%w: Rollout.WavePause is %s: want 0 or more", ErrInvalidConfig, c.WavePause)
	case c.FeedBatchSize < 0:
		return fmt.Errorf("%w: Rollout.FeedBatchSize is %d: want 0 (the default) or more", ErrInvalidConfig, c.FeedBatchSize)
	}
	return nil
}

func (o *Orchestrator) rolloutOptions(createdBy string, includeStale bool) rollouts.Options {
	waves, _ := rollouts.ParseWaves(o.cfg.Rollout.Waves) // validated by New
	return rollouts.Options{
		CanarySelector:  o.cfg.Rollout.CanarySelector,
		Waves:           waves,
		HaltFailureRate: o.cfg.Rollout.HaltFailureRate,
		WavePause:       o.cfg.Rollout.WavePause,
		CreatedBy:       createdBy,
		IncludeStale:    includeStale,
	}
}

// RolloutState is a rollout's state.
type RolloutState = rollouts.State

// Rollout states.
const (
	RolloutRunning    = rollouts.StateRunning
	RolloutHalted     = rollouts.StateHalted
	RolloutCompleted  = rollouts.StateCompleted
	RolloutAborted    = rollouts.StateAborted
	RolloutSuperseded = rollouts.StateSuperseded
)

// What a Rollout's ETA comes from (Rollout.ETABasis).
const (
	// RolloutETAFromHistory: the run history's p50 per tenant over the
	// parallelism measured in the rollout, plus the wave pauses to come.
	RolloutETAFromHistory = rollouts.ETAFromHistory
	// RolloutETAFromPace: the rollout's pace since it started.
	RolloutETAFromPace = rollouts.ETAFromPace
)

type (
	// Rollout is a rollout with its progress.
	Rollout = rollouts.Rollout
	// RolloutWave is the progress of one wave of a Rollout.
	RolloutWave = rollouts.Wave
	// RolloutTenantError is a failed tenant of a Rollout.
	RolloutTenantError = rollouts.TenantError
	// RolloutHaltedError is returned by every run of a tenant at the target
	// of a halted rollout (EnsureMigrated under on_request, MigrateTenant,
	// queued jobs, MigrateTenants): nothing ran.
	RolloutHaltedError = rollouts.HaltedError
)

var (
	// ErrRolloutNotFound is returned for an unknown rollout id.
	ErrRolloutNotFound = rollouts.ErrNotFound
	// ErrRolloutState is wrapped by the error of ResumeRollout and
	// AbortRollout for a rollout not in a state they apply to.
	ErrRolloutState = rollouts.ErrInvalid
)

// StartRollout returns the rollout to the latest version, creating it when
// there is none and tenants are behind (with Config.Rollout), which
// supersedes an active rollout to a lower version. It returns nil when no
// tenant is behind. created reports whether this call created it. A new
// rollout leaves out the FAILED_STALE tenants, as scans do, except those
// that failed in the rollout it supersedes.
func (o *Orchestrator) StartRollout(ctx context.Context, createdBy string) (r *Rollout, created bool, err error) {
	return o.startRollout(ctx, createdBy, false)
}

func (o *Orchestrator) startRollout(ctx context.Context, createdBy string, includeStale bool) (r *Rollout, created bool, err error) {
	if o.cfg.ReadOnly {
		return nil, false, ErrReadOnly
	}
	r, created, err = o.rollouts.Ensure(ctx, o.latest, o.rolloutOptions(createdBy, includeStale))
	if err == nil && r != nil {
		o.feeder.Wake()
	}
	return r, created, err
}

// GetRollout returns rollout id, or ErrRolloutNotFound.
func (o *Orchestrator) GetRollout(ctx context.Context, id int64) (*Rollout, error) {
	return o.rollouts.Get(ctx, id)
}

// ListRollouts returns up to limit rollouts (20 when 0), newest first.
func (o *Orchestrator) ListRollouts(ctx context.Context, limit int) ([]*Rollout, error) {
	return o.rollouts.List(ctx, limit)
}

// CurrentRollout returns the active rollout, else the last one; nil when
// there was none.
func (o *Orchestrator) CurrentRollout(ctx context.Context) (*Rollout, error) {
	return o.rollouts.Current(ctx)
}

// ResumeRollout clears the halt of rollout id: the failed tenants of the
// halted wave (and the waves after it) are tried again and the rollout
// continues. It returns an error wrapping ErrRolloutState when the rollout
// is not halted.
func (o *Orchestrator) ResumeRollout(ctx context.Context, id int64) (*Rollout, error) {
	r, err := o.rollouts.Resume(ctx, id)
	if err == nil {
		o.feeder.Wake()
	}
	return r, err
}

// AbortRollout stops rollout id for good; its tenants keep their state. It
// returns an error wrapping ErrRolloutState when the rollout has ended.
func (o *Orchestrator) AbortRollout(ctx context.Context, id int64) (*Rollout, error) {
	return o.rollouts.Abort(ctx, id)
}

// scanFleet is the full_fleet scan: it starts the rollout to latest (this
// release's), which the feeders then queue in waves, and queues nothing
// itself while that rollout is under way: the tenants behind it lacks (added
// since it began) join its last wave. Once it has completed, or for another
// release's latest, it queues every tenant behind as before. An aborted
// rollout queues nothing.
//
// It returns how many tenants it handed on: to a new rollout (all of them),
// to the active one's last wave, or queued. Handing tenants to a rollout is
// logged as "fleet scan finished" too, with rollout_id.
func (o *Orchestrator) scanFleet(ctx context.Context, latest int64, includeStale bool) (int, error) {
	if latest != o.latest || o.cfg.ReadOnly {
		return o.fleet.ScanAt(ctx, latest, includeStale)
	}
	start := time.Now()
	r, created, err := o.startRollout(ctx, "fleet scan", includeStale)
	if err != nil {
		return 0, fmt.Errorf("fleet scan: %w", err)
	}
	var n int64
	switch {
	case r == nil:
		// Nothing behind, or a newer release's rollout is under way.
	case created:
		n = r.Total
	case r.State.Active():
		// Tenants behind that it does not hold (registered since it
		// began) join its last wave.
		var active bool
		if n, active, err = o.rollouts.AddLate(ctx, latest, includeStale); err != nil {
			return 0, fmt.Errorf("fleet scan: %w", err)
		}
		if !active {
			// It ended since it was read (its last tenant finished): the
			// tenants behind are queued as after it, or, aborted, not.
			if r, err = o.rollouts.Get(ctx, r.ID); err != nil {
				return 0, fmt.Errorf("fleet scan: %w", err)
			}
			if r.State == RolloutCompleted {
				return o.fleet.ScanAt(ctx, latest, includeStale)
			}
			break
		}
		o.feeder.Wake()
	case r.State == RolloutCompleted:
		return o.fleet.ScanAt(ctx, latest, includeStale)
	default:
		// Aborted: nothing is queued for this version.
	}
	attrs := []any{slog.Int64("version", latest), slog.Bool("include_stale", includeStale),
		slog.Int64("scheduled", n), slog.Int64("duration_ms", time.Since(start).Milliseconds())}
	if r != nil {
		attrs = append(attrs, slog.Int64("rollout_id", r.ID), slog.String("rollout_state", string(r.State)))
	}
	o.logger.InfoContext(ctx, "fleet scan finished", attrs...)
	return int(n), nil
}

// rolloutHook is the executor's rollout accounting (run.RolloutHook).
type rolloutHook Orchestrator

func (h *rolloutHook) Admit(ctx context.Context, tenantID string) (string, error) {
	o := (*Orchestrator)(h)
	id, err := o.rollouts.AdmitMember(ctx, o.latest, tenantID)
	if err != nil || id == 0 {
		return "", err
	}
	return strconv.FormatInt(id, 10), nil
}

func (h *rolloutHook) Done(ctx context.Context, r run.RolloutResult) {
	o := (*Orchestrator)(h)
	res := rollouts.Result{TenantID: r.TenantID, Status: string(r.Status), Duration: r.Duration, FailedVersion: r.FailedVersion}
	if r.Status == controlplane.StatusFailed && !migrator.IsRetryable(r.Err) && !errors.Is(r.Err, context.Canceled) && !errors.Is(r.Err, context.DeadlineExceeded) {
		// An inline run (a request, migrate-now) records FAILED, which the
		// next request retries, but a failure no retry fixes (a broken
		// migration) fails the tenant in the rollout, so on_request halts
		// too.
		res.Status = string(controlplane.StatusFailedStale)
	}
	if r.Err != nil {
		res.Err = r.Err.Error()
	}
	if _, err := o.rollouts.Done(ctx, o.latest, res); err != nil {
		o.logger.WarnContext(ctx, "rollout accounting failed", "tenant_id", r.TenantID, "err", err)
	}
	if r.Status != controlplane.StatusFailed {
		o.feeder.Wake()
	}
}

// isHalted reports whether err is a *RolloutHaltedError.
func isHalted(err error) (*RolloutHaltedError, bool) {
	var h *RolloutHaltedError
	ok := errors.As(err, &h)
	return h, ok
}

// rolloutPoll is how often MigrateTenants looks for the next tenant of a
// rollout whose open waves are all in flight.
const rolloutPoll = 50 * time.Millisecond

// rolloutSelection yields ids, then the tenants of the rollout to the
// latest version as its waves open, claiming each just before it is
// handed to a worker, until the rollout ends or halts. A tenant claimed but
// not handed out (ctx ended) is put back. A rollout that completes or is
// aborted meanwhile is followed, once nothing of this batch runs, by the
// tenants behind it did not bring to the target (failed in it, behind again,
// aborted before their turn), as a migrate --all started then would run
// them; except ids and those failedHere says failed in this batch.
func (o *Orchestrator) rolloutSelection(ctx context.Context, ids []string, includeStale bool, claimer int64, idle, stuck func() bool, failedHere func(string) bool) iter.Seq2[selected, error] {
	return func(yield func(selected, error) bool) {
		for s, err := range o.selection(ctx, Selection{IDs: ids}) {
			if !yield(s, err) || err != nil {
				return
			}
		}
		// The rollout's later waves are inserted beside the claims, which
		// meanwhile take its head (serve's feeders do the same).
		fillCtx, stopFill := context.WithCancel(ctx)
		fillDone := make(chan struct{})
		go func() {
			defer close(fillDone)
			o.fillRollout(fillCtx)
		}()
		defer func() {
			stopFill()
			<-fillDone
		}()
		// The tenants named end before the rollout's are claimed: a named
		// tenant that is also behind is then done in the rollout, not
		// claimed and run a second time.
		for len(ids) > 0 && !idle() {
			select {
			case <-ctx.Done():
				yield(selected{}, ctx.Err())
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		rerun := map[string]bool{} // the tenants released to run once more
		for {
			if ctx.Err() != nil {
				yield(selected{}, ctx.Err())
				return
			}
			// Idle before the step: every run of this batch has ended, and
			// the step settled the tenants their recorded state tells.
			wasIdle := idle()
			state, err := o.rollouts.Step(ctx, o.latest)
			if err != nil {
				yield(selected{}, err)
				return
			}
			if state != RolloutRunning {
				if state == RolloutCompleted || state == RolloutAborted {
					o.behindAfterRollout(ctx, ids, includeStale, idle, failedHere, yield)
				}
				return // halted (MigrateTenants reports it), superseded, or done
			}
			claimed, err := o.rollouts.Claim(ctx, o.latest, 1, claimer, nil)
			if err != nil {
				yield(selected{}, err)
				return
			}
			if len(claimed) == 1 {
				if !yield(selected{id: claimed[0], rollout: true}, nil) {
					rctx, cancel := cleanupCtx(ctx)
					if err := o.rollouts.Release(rctx, o.latest, claimed); err != nil {
						o.logger.Warn("release rollout tenant", "tenant_id", claimed[0], "err", err)
					}
					cancel()
					return
				}
				continue
			}
			if stuck != nil && stuck() {
				return // the wave waits for a server this batch gave up on
			}
			if wasIdle {
				// Nothing of this batch runs, yet the wave may wait for
				// tenants it claimed: runs that ended without their result
				// reaching the rollout (a control-plane error, a tenant
				// changed under every rerun, one removed and registered
				// again). Nobody else takes them over while this process
				// lives, so each is run once more, then given up on.
				held, err := o.rollouts.Holding(ctx, o.latest, claimer, 100)
				if err != nil {
					yield(selected{}, err)
					return
				}
				if again := slices.DeleteFunc(slices.Clone(held), func(id string) bool { return rerun[id] }); len(again) > 0 {
					if err := o.rollouts.Release(ctx, o.latest, again); err != nil {
						yield(selected{}, err)
						return
					}
					for _, id := range again {
						rerun[id] = true
					}
					continue
				}
				if len(held) > 0 {
					yield(selected{}, &rolloutUnrecordedError{target: o.latest, tenants: held})
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(rolloutPoll):
			}
		}
	}
}

// behindAfterRollout yields the tenants behind (FAILED_STALE ones with
// includeStale) once nothing of the batch runs, but not ids nor the ones
// failedHere names: after a rollout that completed or was aborted during
// the batch, what is still behind is run as without a rollout.
func (o *Orchestrator) behindAfterRollout(ctx context.Context, ids []string, includeStale bool, idle func() bool, failedHere func(string) bool, yield func(selected, error) bool) {
	for !idle() {
		select {
		case <-ctx.Done():
			yield(selected{}, ctx.Err())
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
	for s, err := range o.selection(ctx, Selection{AllBehind: true, IncludeStale: includeStale}) {
		if err == nil && (slices.Contains(ids, s.id) || failedHere(s.id)) {
			continue
		}
		if !yield(s, err) || err != nil {
			return
		}
	}
}

// rolloutUnrecordedError ends the rollout loop of MigrateTenants: the
// rollout's open wave waits for tenants this batch ran twice without their
// result reaching the rollout. The next migrate --all takes them over.
type rolloutUnrecordedError struct {
	target  int64
	tenants []string
}

func (e *rolloutUnrecordedError) Error() string {
	return fmt.Sprintf("the rollout to version %d waits for tenants whose runs here ended twice without their result reaching the rollout (see their errors), so nothing more of it can start: %s; once the cause is fixed, run migrate --all again",
		e.target, strings.Join(e.tenants, ", "))
}

// fillRollout inserts the later waves of the rollout to the latest version
// (rollouts.Store.Fill), or waits while another process inserts them and
// takes over if it dies, until none remains or ctx ends.
func (o *Orchestrator) fillRollout(ctx context.Context) {
	for {
		waiting, err := o.rollouts.Fill(ctx, o.latest)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			o.logger.WarnContext(ctx, "rollout backlog insert failed", "version", o.latest, "err", err)
		case !waiting:
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(rollouts.DefaultFeedInterval):
		}
	}
}

// ValidateWaves reports whether s is a valid RolloutConfig.Waves: cumulative
// wave sizes, counts or percentages, e.g. "5,10%,100%".
func ValidateWaves(s string) error {
	_, err := rollouts.ParseWaves(s)
	return err
}

// ParseFailureRate parses a RolloutConfig.HaltFailureRate given as "5%" or
// as a fraction "0.05", from 0 to 100%.
func ParseFailureRate(s string) (float64, error) { return rollouts.ParseRate(s) }
