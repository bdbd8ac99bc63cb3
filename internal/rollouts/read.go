package rollouts

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const rolloutColumns = `id, target_version, state, coalesce(halt_reason, ''), canary_selector, wave_ends,
	halt_failure_rate, wave_pause_ms, current_wave, total, started_at, finished_at`

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
		&r.HaltFailureRate, &pauseMS, &r.CurrentWave, &r.Total, &r.StartedAt, &r.FinishedAt); err != nil {
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
	// 00015): a few rows per wave, whatever the rollout's size.
	rows, err := s.pool.Query(ctx, `SELECT wave, state, n, completed_ms
		FROM tenantmigrate.rollout_counts WHERE rollout_id = $1 AND n <> 0`, r.ID)
	if err != nil {
		return fmt.Errorf("read progress of rollout %d: %w", r.ID, err)
	}
	var sumMS int64
	for rows.Next() {
		var (
			wave     int
			state    string
			n, durMS int64
		)
		if err := rows.Scan(&wave, &state, &n, &durMS); err != nil {
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
		case "FAILED":
			w.Failed += n
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
		// Tenants not yet inserted (Store.Fill) are pending.
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
	// ETA: the pace since the start (tenants finished per second), which
	// takes in the parallelism of every instance and the wave pauses.
	done := r.Completed + r.Failed + r.Removed
	if r.State == StateRunning && done > 0 && r.Pending > 0 {
		elapsed := time.Since(r.StartedAt)
		eta := time.Now().Add(time.Duration(float64(elapsed) / float64(done) * float64(r.Pending)))
		r.ETA = &eta
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
