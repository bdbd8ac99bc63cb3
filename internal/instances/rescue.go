package instances

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Rescued is one job the rescue took from a dead instance.
type Rescued struct {
	JobID int64
	Kind  string
	// TenantID is the migrate_tenant job's tenant, "" for other kinds.
	TenantID string
	// Instance is the River client id the job was running on.
	Instance string
	// Rescues counts the times the job was rescued, this one included.
	Rescues int
	// Discarded reports a job out of attempts (see Config.MaxFreeRescues);
	// the others are available again.
	Discarded bool
}

// RescuesKey is the key of river_job.metadata that counts a job's rescues.
const RescuesKey = "tenantmigrate_rescues"

// rescueSQL gives the running jobs of dead instances back to the queue, in
// one statement:
//
//   - dead: instances stopped, or silent for longer than their own timeout;
//   - stuck: jobs running on a dead instance (the last element of
//     attempted_by is the client running the current attempt), and jobs
//     running for longer than $1 (microseconds) on a client with no row at
//     all (an older release, which does not heartbeat); $1 <= 0 leaves those
//     alone;
//   - a job rescued fewer than $2 times before gets its attempt back (River
//     counted it when the job was fetched) and becomes available now, as a
//     job snoozed by a shutdown does; later rescues count as failed
//     attempts, with an error in the job's list, and a job out of attempts
//     is discarded.
//
// Two rescuers may run it at once: the second blocks on the rows the first
// updated, then finds them no longer running (PostgreSQL rechecks the WHERE
// of an UPDATE on the new row version) and leaves them. A job whose owner
// records its end first is not running either. That recheck sees only the
// UPDATE's own WHERE, not the snapshot the CTEs read, so the UPDATE also
// requires the attempt the CTEs saw (attempted_at): a job given back by
// another rescuer and fetched again meanwhile, by a live instance or by
// this one restarted, runs a new attempt and is left to it.
const rescueSQL = `
WITH dead AS (
    SELECT id FROM tenantmigrate.instances
    WHERE stopped_at IS NOT NULL OR heartbeat_at + timeout < now()
),
stuck AS (
    SELECT j.id, d.id AS instance, j.attempted_at
    FROM tenantmigrate.river_job j
    JOIN dead d ON d.id = j.attempted_by[cardinality(j.attempted_by)]
    WHERE j.state = 'running'
  UNION ALL
    SELECT j.id, coalesce(j.attempted_by[cardinality(j.attempted_by)], ''), j.attempted_at
    FROM tenantmigrate.river_job j
    WHERE j.state = 'running' AND $1::bigint > 0 AND j.attempted_at < now() - $1::bigint * interval '1 microsecond'
      AND NOT EXISTS (SELECT 1 FROM tenantmigrate.instances i WHERE i.id = j.attempted_by[cardinality(j.attempted_by)])
),
decided AS (
    SELECT s.id, s.instance, s.attempted_at,
           coalesce((j.metadata->>'` + RescuesKey + `')::int, 0) + 1 AS rescues,
           coalesce((j.metadata->>'` + RescuesKey + `')::int, 0) < $2 AS free,
           coalesce((j.metadata->>'` + RescuesKey + `')::int, 0) >= $2 AND j.attempt >= j.max_attempts AS discard
    FROM stuck s JOIN tenantmigrate.river_job j ON j.id = s.id
)
UPDATE tenantmigrate.river_job j SET
    state = CASE WHEN d.discard THEN 'discarded' ELSE 'available' END::tenantmigrate.river_job_state,
    attempt = CASE WHEN d.free THEN greatest(j.attempt - 1, 0) ELSE j.attempt END,
    scheduled_at = CASE WHEN d.discard THEN j.scheduled_at ELSE now() END,
    finalized_at = CASE WHEN d.discard THEN now() END,
    errors = CASE WHEN d.free THEN j.errors ELSE array_append(j.errors, jsonb_build_object(
        'at', now(), 'attempt', j.attempt, 'trace', '',
        'error', format('instance %s died while running the job (rescue %s)', d.instance, d.rescues))) END,
    metadata = j.metadata || jsonb_build_object('` + RescuesKey + `', d.rescues, 'tenantmigrate_rescued_from', d.instance)
FROM decided d
WHERE j.id = d.id AND j.state = 'running' AND j.attempted_at IS NOT DISTINCT FROM d.attempted_at
RETURNING j.id, j.kind, coalesce(j.args->>'tenant_id', ''), d.instance, d.rescues, d.discard`

// pruneSQL deletes the rows of dead instances that no running job names, so
// the table holds the live instances and the dead ones still to be rescued.
const pruneSQL = `
DELETE FROM tenantmigrate.instances i
WHERE (i.stopped_at IS NOT NULL OR i.heartbeat_at + i.timeout < now())
  AND NOT EXISTS (
    SELECT 1 FROM tenantmigrate.river_job j
    WHERE j.state = 'running' AND j.attempted_by[cardinality(j.attempted_by)] = i.id)`

// rescueOnce rescues the jobs of dead instances and prunes their rows.
func (s *Service) rescueOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(s.cfg.Timeout, 5*time.Second))
	defer cancel()
	rescued, err := s.rescue(ctx)
	if err != nil {
		return err
	}
	var discarded []Rescued
	for _, r := range rescued {
		attrs := []any{
			slog.String("instance_id", r.Instance), slog.Int64("job_id", r.JobID), slog.String("kind", r.Kind),
			slog.Int("rescues", r.Rescues),
		}
		if r.TenantID != "" {
			attrs = append(attrs, slog.String("tenant_id", r.TenantID))
		}
		if r.Discarded {
			discarded = append(discarded, r)
			s.cfg.Logger.ErrorContext(ctx, "job discarded: the instances running it kept dying and it has no attempt left", attrs...)
			continue
		}
		s.cfg.Logger.WarnContext(ctx, "job of a dead instance back in the queue", attrs...)
	}
	if len(discarded) > 0 && s.cfg.OnDiscard != nil {
		s.cfg.OnDiscard(ctx, discarded)
	}
	if _, err := s.cfg.Pool.Exec(ctx, pruneSQL); err != nil {
		return fmt.Errorf("delete dead instances: %w", err)
	}
	return nil
}

// rescue runs rescueSQL once and returns the jobs it rescued.
func (s *Service) rescue(ctx context.Context) ([]Rescued, error) {
	orphans := s.cfg.OrphanRescueAfter
	if orphans < 0 {
		orphans = 0
	}
	rows, err := s.cfg.Pool.Query(ctx, rescueSQL, orphans.Microseconds(), s.cfg.MaxFreeRescues)
	if err != nil {
		return nil, fmt.Errorf("rescue jobs of dead instances: %w", err)
	}
	rescued, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Rescued, error) {
		var r Rescued
		err := row.Scan(&r.JobID, &r.Kind, &r.TenantID, &r.Instance, &r.Rescues, &r.Discarded)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("rescue jobs of dead instances: %w", err)
	}
	return rescued, nil
}
