package history

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// MaxDurationSample bounds the runs Durations measures: the latest ones.
	MaxDurationSample = 1000
	// DurationWindow is how far back the fleet page and the rollout ETA
	// measure tenant runs: Durations(now - DurationWindow).
	DurationWindow = 24 * time.Hour
)

// Querier reads one row: a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Durations measures how long tenants took to migrate: the p50 and p95 of
// the latest MaxDurationSample runs that started at or after since,
// completed, went up and applied at least one migration (a run that found
// nothing to apply says nothing of what migrating costs). It reads the
// partial index of those runs (runs_applied_started_idx) backwards, at most
// MaxDurationSample entries, never the whole table.
func (s *Store) Durations(ctx context.Context, since time.Time) (Durations, error) {
	return ReadDurations(ctx, s.pool, since)
}

// ReadDurations is Store.Durations through db, for a reader of the control
// plane that has no Store (the rollout ETA in internal/rollouts).
func ReadDurations(ctx context.Context, db Querier, since time.Time) (Durations, error) {
	var (
		d        Durations
		p50, p95 *float64
	)
	// The predicate repeats runs_applied_started_idx's, with constants, so
	// that the planner can use the partial index even in a generic plan.
	err := db.QueryRow(ctx, `
		SELECT count(*),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds),
			percentile_cont(0.95) WITHIN GROUP (ORDER BY seconds)
		FROM (
			SELECT extract(epoch FROM finished_at - started_at)::float8 AS seconds
			FROM tenantmigrate.runs
			WHERE started_at >= $1 AND result = 'completed' AND direction = 'up'
				AND to_version IS DISTINCT FROM from_version
			ORDER BY started_at DESC
			LIMIT $2
		) latest`, since, MaxDurationSample).Scan(&d.Runs, &p50, &p95)
	if err != nil {
		return Durations{}, fmt.Errorf("read run durations: %w", err)
	}
	if p50 != nil {
		d.P50 = seconds(*p50)
	}
	if p95 != nil {
		d.P95 = seconds(*p95)
	}
	return d, nil
}

func seconds(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond)
}
