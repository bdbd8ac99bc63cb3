package rollouts

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/internal/history"
)

const rolloutColumns = `id, target_version, state, coalesce(halt_reason, ''), canary_selector, wave_ends,
	halt_failure_rate, wave_pause_ms, current_wave, total, started_at, finished_at, wave_done_at`

// Get returns rollout id with its progress. It returns ErrNotFound for an
// unknown id. Its counts come from the summary kept by triggers
// (tenantmigrate.rollout_counts), so they cost the same at any size.
func (s *Store) Get(ctx context.Context, id int64) (*Rollout, error) {
	r, err := scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutColumns+` FROM tenantmigrate.rollouts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("rollout %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read rollout %d: %w", id, err)
	}
	if err := s.fillProgress(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}

// List returns up to limit rollouts, newest first, with their progress.
func (s *Store) List(ctx context.Context, limit int) ([]*Rollout, error) {
	if limit <= 0 || limit > 100 {
		limit = 20
	}
	rows, err := s.pool.Query(ctx, `SELECT `+rolloutColumns+` FROM tenantmigrate.rollouts ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Rollout, error) { return scanRollout(row) })
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	for _, r := range out {
		if err := s.fillProgress(ctx, r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Current returns the active rollout, or else the most recent one; nil
// when there is none.
func (s *Store) Current(ctx context.Context) (*Rollout, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.rollouts
		ORDER BY state IN ('RUNNING', 'HALTED') DESC, id DESC LIMIT 1`).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read current rollout: %w", err)
	}
	return s.Get(ctx, id)
}

func scanRollout(row pgx.Row) (*Rollout, error) {
	var (
		r       Rollout
		pauseMS int64
	)
	if err := row.Scan(&r.ID, &r.TargetVersion, &r.State, &r.HaltReason, &r.CanarySelector, &r.WaveEnds,
		&r.HaltFailureRate, &pauseMS, &r.CurrentWave, &r.Total, &r.StartedAt, &r.FinishedAt, &r.waveDoneAt); err != nil {
		return nil, err
	}
	r.WavePause = time.Duration(pauseMS) * time.Millisecond
	return &r, nil
}

// fillProgress counts r's tenants per wave and state, and estimates its end.
func (s *Store) fillProgress(ctx context.Context, r *Rollout) error {
	r.Waves = make([]Wave, len(r.WaveEnds))
	prev := int64(0)
	for i, end := range r.WaveEnds {
		r.Waves[i].Size = end - prev
		prev = end
	}
	// The counts the rollout_tenants triggers keep (control-plane migration
	// 00015), a few rows per wave whatever the rollout's size: per wave and
	// state, the count and, of the tenants with a duration, their run time
	// and how many they are; the first and last finish. The completed ones
	// give the mean duration, the finished ones (completed and failed) the
	// parallelism the ETA measures.
	rows, err := s.pool.Query(ctx, `SELECT wave, state, n, run_ms, timed, first_finished, last_finished
		FROM tenantmigrate.rollout_counts WHERE rollout_id = $1 AND n <> 0`, r.ID)
	if err != nil {
		return fmt.Errorf("read progress of rollout %d: %w", r.ID, err)
	}
	var sumMS int64
	busy := make([]waveBusy, len(r.Waves))
	for rows.Next() {
		var (
			wave          int
			state         string
			n, durMS, nMS int64
			first, last   *time.Time
		)
		if err := rows.Scan(&wave, &state, &n, &durMS, &nMS, &first, &last); err != nil {
			rows.Close()
			return fmt.Errorf("read progress of rollout %d: %w", r.ID, err)
		}
		if wave < 0 || wave >= len(r.Waves) {
			continue
		}
		w := &r.Waves[wave]
		switch state {
		case "COMPLETED":
			w.Completed += n
			sumMS += durMS
			busy[wave].add(durMS, nMS, first, last)
		case "FAILED":
			w.Failed += n
			busy[wave].add(durMS, nMS, first, last)
		case "REMOVED":
			w.Removed += n
		default:
			w.Pending += n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read progress of rollout %d: %w", r.ID, err)
	}
	for i := range r.Waves {
		w := &r.Waves[i]
		// PENDING tenants are not counted (see 00015), nor those not yet
		// inserted (Store.Fill): a wave's pending tenants are its size less
		// the others.
		w.Pending += max(0, w.Size-w.Completed-w.Failed-w.Pending-w.Removed)
		r.Completed += w.Completed
		r.Failed += w.Failed
		r.Pending += w.Pending
		r.Removed += w.Removed
		switch {
		case w.Failed > threshold(r.HaltFailureRate, w.Size):
			w.State = "FAILED"
		case i < r.CurrentWave || r.State == StateCompleted:
			w.State = "PASSED"
		case i == r.CurrentWave && r.State.Active():
			w.State = "RUNNING"
		default:
			w.State = "PENDING"
		}
	}
	if r.Completed > 0 {
		r.AvgDuration = time.Duration(sumMS/r.Completed) * time.Millisecond
	}
	if err := s.estimate(ctx, r, busy, time.Now()); err != nil {
		return err
	}
	// The first errors of the wave it halted on (else the current one).
	wave := r.CurrentWave
	for i, w := range r.Waves {
		if w.State == "FAILED" {
			wave = i
			break
		}
	}
	erows, err := s.pool.Query(ctx, `SELECT tenant_id, coalesce(failed_version, 0), coalesce(last_error, '')
		FROM tenantmigrate.rollout_tenants WHERE rollout_id = $1 AND wave = $2 AND state = 'FAILED'
		ORDER BY finished_at, tenant_id LIMIT 5`, r.ID, wave)
	if err != nil {
		return fmt.Errorf("read errors of rollout %d: %w", r.ID, err)
	}
	r.FirstErrors, err = pgx.CollectRows(erows, func(row pgx.CollectableRow) (TenantError, error) {
		var te TenantError
		err := row.Scan(&te.TenantID, &te.FailedVersion, &te.Error)
		return te, err
	})
	if err != nil {
		return fmt.Errorf("read errors of rollout %d: %w", r.ID, err)
	}
	return nil
}

// Bases of an ETA (Rollout.ETABasis).
const (
	// ETAFromHistory: the p50 per-tenant duration of the run history over
	// the parallelism measured in the rollout, plus the wave pauses to come.
	ETAFromHistory = "history"
	// ETAFromPace: the rollout's own pace since it started (tenants
	// finished per second), when the history has no recent run or the
	// rollout no parallelism to measure yet.
	ETAFromPace = "pace"
)

// waveBusy is what a wave's finished tenants tell of its parallelism: their
// summed run time, how many runs it sums, and their first and last finish.
type waveBusy struct {
	runMS, runs int64
	first, last time.Time
}

func (b *waveBusy) add(runMS, runs int64, first, last *time.Time) {
	if first == nil || last == nil || runs <= 0 {
		return
	}
	if b.first.IsZero() || first.Before(b.first) {
		b.first = *first
	}
	if last.After(b.last) {
		b.last = *last
	}
	b.runMS += runMS
	b.runs += runs
}

// parallelism is how many tenants the wave ran at once on average while it
// ran (Little's law): its run time over its span, from the first start to
// the last finish. The first start is taken as the first finish less the
// mean run, which spares the progress read a computation per row.
// 0 when it cannot tell.
func (b waveBusy) parallelism() float64 {
	if b.runMS <= 0 || b.runs <= 0 {
		return 0
	}
	mean := float64(b.runMS) / float64(b.runs)
	spanMS := float64(b.last.Sub(b.first))/float64(time.Millisecond) + mean
	return float64(b.runMS) / spanMS
}

// measuredParallelism is the parallelism of the latest wave that has
// finished tenants (the current one, or else the one before): every
// instance's workers and every migrate --all, as the server caps, DOWN
// servers and the feeding let them run. 0 when no wave can tell.
func measuredParallelism(busy []waveBusy) float64 {
	for i := len(busy) - 1; i >= 0; i-- {
		if p := busy[i].parallelism(); p > 0 {
			return p
		}
	}
	return 0
}

// estimate sets r's ETA and its waves' (see Rollout.ETABasis), for a
// running rollout with tenants pending:
//
//   - from the history, when it has recent runs (history.Durations over
//     history.DurationWindow) and a wave of the rollout has finished
//     tenants: each wave left takes ceil(pending / P) rounds of p50, P the
//     measured parallelism, and each wave after the current one first
//     waits its wave pause (less what already passed of it);
//   - else at the pace so far: each pending tenant takes the time since
//     the start over the tenants finished (which takes in the pauses);
//   - else (nothing finished yet) none.
func (s *Store) estimate(ctx context.Context, r *Rollout, busy []waveBusy, now time.Time) error {
	if r.State != StateRunning || r.Pending <= 0 {
		return nil
	}
	var waveTime func(pending int64) time.Duration
	withPauses := false
	if p := measuredParallelism(busy); p > 0 {
		d, err := history.ReadDurations(ctx, s.pool, now.Add(-history.DurationWindow))
		if err != nil {
			return fmt.Errorf("estimate rollout %d: %w", r.ID, err)
		}
		if d.Runs > 0 && d.P50 > 0 {
			r.ETABasis, r.ETAPerTenant, r.ETAParallelism = ETAFromHistory, d.P50, p
			waveTime = func(pending int64) time.Duration {
				return clampDuration(math.Ceil(float64(pending)/p) * float64(d.P50))
			}
			withPauses = true
		}
	}
	if waveTime == nil {
		done := r.Completed + r.Failed + r.Removed
		if done == 0 {
			return nil
		}
		perTenant := float64(now.Sub(r.StartedAt)) / float64(done)
		r.ETABasis = ETAFromPace
		waveTime = func(pending int64) time.Duration { return clampDuration(perTenant * float64(pending)) }
	}
	at := now
	for i := range r.Waves {
		w := &r.Waves[i]
		if withPauses && i > r.CurrentWave && r.WavePause > 0 {
			pause := r.WavePause
			if i == r.CurrentWave+1 && r.waveDoneAt != nil {
				pause = max(0, pause-now.Sub(*r.waveDoneAt))
			}
			at = at.Add(min(pause, maxETA-at.Sub(now)))
		}
		if w.Pending <= 0 {
			continue
		}
		at = at.Add(min(waveTime(w.Pending), maxETA-at.Sub(now)))
		eta := at
		w.ETA = &eta
		r.ETA = &eta
	}
	return nil
}

// maxETA bounds how far ahead an ETA is put (a wave measured at a tiny
// parallelism, a pace of days per tenant), so that no sum overflows.
const maxETA = 100 * 365 * 24 * time.Hour

// clampDuration converts ns to a Duration of at most maxETA.
func clampDuration(ns float64) time.Duration {
	if ns >= float64(maxETA) || math.IsNaN(ns) {
		return maxETA
	}
	return time.Duration(ns)
}
