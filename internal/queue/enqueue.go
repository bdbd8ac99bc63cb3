package queue

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
)

// Enqueue inserts a migrate_tenant job for each tenant id, aimed at
// Config.Latest (MigrateTenantArgs.Target), EnqueueBatchSize
// ids per InsertMany (one INSERT statement and one transaction per batch).
// Tenants that already have a live job, and repeats within ids, are skipped
// silently. It returns how many jobs were inserted. If a batch fails, the
// count covers the batches inserted before it.
//
// Enqueue works on an insert-only Queue (RunWorkers false) too.
func (q *Queue) Enqueue(ctx context.Context, ids []string) (inserted int, err error) {
	params := make([]river.InsertManyParams, 0, min(len(ids), q.cfg.EnqueueBatchSize))
	for chunk := range slices.Chunk(ids, q.cfg.EnqueueBatchSize) {
		// Sorted and without repeats: River's ON CONFLICT DO UPDATE cannot
		// touch one row twice in a statement, and a fixed lock order keeps
		// two instances enqueueing overlapping sets from deadlocking.
		batch := slices.Clone(chunk)
		slices.Sort(batch)
		batch = slices.Compact(batch)

		params = params[:0]
		for _, id := range batch {
			params = append(params, river.InsertManyParams{
				Args:       MigrateTenantArgs{TenantID: id, Target: q.cfg.Latest},
				InsertOpts: q.insertOpts,
			})
		}
		var results []*rivertype.JobInsertResult
		err := pgx.BeginFunc(ctx, q.cfg.Pool, func(tx pgx.Tx) error {
			// Sorted batches run beside each other; EnqueueTx's, in the
			// caller's order, do not (enqueueOrderLock).
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, enqueueOrderLock); err != nil {
				return err
			}
			var err error
			results, err = q.client.InsertManyTx(ctx, tx, params)
			return err
		})
		if err != nil {
			return inserted, fmt.Errorf("enqueue %d tenants (%d inserted before): %w", len(ids), inserted, err)
		}
		for _, res := range results {
			if !res.UniqueSkippedAsDuplicate {
				inserted++
			}
		}
	}
	return inserted, nil
}

// enqueueOrderLock is the control-plane advisory lock ("tmeq") that keeps
// batch inserts of migrate_tenant jobs in different orders from
// deadlocking. A batch takes the unique-index entries of its tenants' jobs
// one after the other, so two batches with two tenants in common, in
// opposite orders, can each wait for the other. Enqueue sorts its batches
// by tenant id, one order for all, and takes the lock shared: its batches
// (a fleet scan's concurrent pages) run beside each other. EnqueueTx keeps
// the caller's order (a rollout's batch, its servers taking turns) and
// takes it exclusive, for as long as its transaction lasts: the few
// milliseconds of a rollout claim.
const enqueueOrderLock int64 = 0x746d_6571 << 32

// Remaining counts live migrate_tenant jobs: available, pending, retryable,
// running or scheduled. The state condition is served by River's
// river_job_prioritized_fetching_index (state first), so the count reads the
// live jobs only, not the finished ones River keeps for a day.
func (q *Queue) Remaining(ctx context.Context) (int64, error) {
	states := make([]string, len(liveStates))
	for i, s := range liveStates {
		states[i] = "'" + string(s) + "'" // constants from rivertype
	}
	sql := "SELECT count(*) FROM " + pgx.Identifier{Schema, "river_job"}.Sanitize() +
		" WHERE state IN (" + strings.Join(states, ", ") + ") AND kind = $1"
	var n int64
	if err := q.cfg.Pool.QueryRow(ctx, sql, KindMigrateTenant).Scan(&n); err != nil {
		return 0, fmt.Errorf("count remaining jobs: %w", err)
	}
	return n, nil
}

// EnqueueFleetScan queues a fleet_scan job for the change of the fleet
// target with generation gen: instances that all hear of the change insert
// one between them (the job is unique per generation and window).
func (q *Queue) EnqueueFleetScan(ctx context.Context, gen int64) error {
	_, err := q.client.Insert(ctx, FleetScanArgs{Latest: q.cfg.Latest, TargetGeneration: gen}, fleetScanStartOpts(q.cfg))
	if err != nil {
		return fmt.Errorf("queue fleet scan: %w", err)
	}
	return nil
}

// EnqueueTx inserts a migrate_tenant job for each tenant id in tx, as
// Enqueue does, in one InsertManyTx: the jobs exist exactly when tx
// commits. A rollout's feeder marks a batch QUEUED and queues it in one
// transaction this way. Tenants that already have a live job are skipped;
// it returns how many were inserted.
//
// The jobs are inserted in the order of ids (a repeat is left out), which
// is the order River fetches them in: their ids follow it, and they share
// their scheduled time. A rollout's batch comes with its servers taking
// turns, so that the first jobs fetched fill every server's slots rather
// than one server's while its jobs wait. That order is not one fixed for
// all, so tx takes enqueueOrderLock exclusive first, until it ends.
func (q *Queue) EnqueueTx(ctx context.Context, tx pgx.Tx, ids []string) (inserted int, err error) {
	seen := make(map[string]bool, len(ids))
	params := make([]river.InsertManyParams, 0, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		params = append(params, river.InsertManyParams{
			Args:       MigrateTenantArgs{TenantID: id, Target: q.cfg.Latest},
			InsertOpts: q.insertOpts,
		})
	}
	if len(params) == 0 {
		return 0, nil
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, enqueueOrderLock); err != nil {
		return 0, fmt.Errorf("enqueue %d tenants: %w", len(ids), err)
	}
	results, err := q.client.InsertManyTx(ctx, tx, params)
	if err != nil {
		return 0, fmt.Errorf("enqueue %d tenants: %w", len(ids), err)
	}
	for _, res := range results {
		if !res.UniqueSkippedAsDuplicate {
			inserted++
		}
	}
	return inserted, nil
}
