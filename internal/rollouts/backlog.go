package rollouts

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// A rollout starts in two steps, so that its first job starts within a
// second at 1M tenants rather than after the ~18 s it takes to order them
// all into rollout_tenants:
//
//  1. Ensure's transaction counts the members in one scan of its snapshot,
//     stores the ids of the non-canary ones in rollout_backlog (migration
//     00014), and inserts the head: the canaries and the first Store.StartHead
//     tenants of the next wave, at their final positions.
//  2. Fill inserts the rest of the backlog, at the positions the single
//     transaction gave them before (canaries + rank by md5(id), id), while
//     the head runs, and deletes the backlog in the same transaction.
//
// While the backlog exists, Step passes or completes no wave that ends
// beyond the head, and AddLate adds nothing (the members not yet inserted
// would look late). The backlog row's lock is the inserter's lease: it goes
// with the inserter's session when its process dies, and the next Fill
// takes over.

// DefaultStartHead bounds the tenants of the first wave after the canaries
// that Ensure inserts in the creating transaction (all the canaries are):
// ten feed batches, for the workers to start on while Fill inserts the rest.
const DefaultStartHead = 10 * DefaultFeedBatch

// headEnd is how many of a new rollout's tenants, in order, its creating
// transaction inserts: the canaries and the first wave after them, at most
// bound of it.
func headEnd(ends []int64, canaries, bound int64) int64 {
	next := ends[len(ends)-1]
	for _, e := range ends {
		if e > canaries {
			next = e
			break
		}
	}
	return min(next, canaries+max(1, bound))
}

// analyze refreshes the statistics of rollout_tenants after a bulk insert.
func (s *Store) analyze(ctx context.Context, id int64) {
	if _, err := s.pool.Exec(ctx, `ANALYZE tenantmigrate.rollout_tenants`); err != nil {
		s.logger.WarnContext(ctx, "analyze rollout tenants", "rollout_id", id, "err", err)
	}
}

// Fill inserts the tenants of the rollout to target that Ensure left in its
// backlog, unless another process is inserting them (it holds the
// backlog's lock). It also drops the backlogs of rollouts that have ended
// (superseded or aborted before their rest was in: nothing will run it).
// waiting reports that a backlog of the rollout to target remains: another
// process is inserting it, and a later Fill takes over if that process
// dies. Every feeder and every migrate --all calls it until nothing waits.
func (s *Store) Fill(ctx context.Context, target int64) (waiting bool, err error) {
	// The cheap look first: this runs every feeder interval.
	rows, err := s.pool.Query(ctx, `SELECT b.rollout_id FROM tenantmigrate.rollout_backlog b
		JOIN tenantmigrate.rollouts r ON r.id = b.rollout_id
		WHERE r.target_version = $1 OR r.state NOT IN ('RUNNING', 'HALTED')
		ORDER BY b.rollout_id`, target)
	if err != nil {
		return false, fmt.Errorf("read backlog of rollout to %d: %w", target, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return false, fmt.Errorf("read backlog of rollout to %d: %w", target, err)
	}
	for _, id := range ids {
		busy, err := s.fillOne(ctx, id, target)
		if err != nil {
			return false, fmt.Errorf("insert the later waves of rollout %d: %w", id, err)
		}
		waiting = waiting || busy
	}
	return waiting, nil
}

// fillOne inserts the backlog of rollout id, or drops it when the rollout
// has ended. busy reports that another process holds it (and target is the
// rollout's).
func (s *Store) fillOne(ctx context.Context, id, target int64) (busy bool, err error) {
	var (
		inserted int64
		filled   bool // the rest of an active rollout is in
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// A client that dies in the middle of the insert is noticed within
		// a second (PostgreSQL 14 and later), not when the insert ends, so
		// the lock goes and another process takes over.
		if _, err := tx.Exec(ctx, `SELECT set_config('client_connection_check_interval', '1000', true)
			WHERE current_setting('server_version_num')::int >= 140000`); err != nil {
			return err
		}
		var (
			state    State
			ends     []int64
			canaries int64
			head     int64
		)
		err := tx.QueryRow(ctx, `SELECT r.state, r.wave_ends, b.canaries, b.head
			FROM tenantmigrate.rollout_backlog b JOIN tenantmigrate.rollouts r ON r.id = b.rollout_id
			WHERE b.rollout_id = $1 FOR UPDATE OF b SKIP LOCKED`, id).Scan(&state, &ends, &canaries, &head)
		if errors.Is(err, pgx.ErrNoRows) {
			// Locked by the process inserting it, or just inserted; the
			// next look tells.
			busy = true
			return nil
		}
		if err != nil {
			return err
		}
		filled = state.Active()
		if filled {
			// Every id of the backlog at its position in the order of the
			// whole rollout (canaries, then md5 of the id, then the id for
			// a collision): the same rows and positions as one transaction
			// ordering every member, whoever inserts them and whenever.
			// The head holds exactly the positions below head (Ensure
			// inserted the first of this same order), and nothing else
			// inserts rows into a rollout with a backlog, so the rest is
			// the positions from head on. (ON CONFLICT DO NOTHING instead
			// made the insert twice as slow.)
			tag, err := tx.Exec(ctx, `INSERT INTO tenantmigrate.rollout_tenants (rollout_id, tenant_id, wave, position)
				SELECT $1, id, width_bucket(pos, $2::bigint[]), pos
				FROM (SELECT id, $3 + row_number() OVER (ORDER BY md5(id), id) - 1 AS pos
					FROM tenantmigrate.rollout_backlog b, unnest(b.tenant_ids) AS id WHERE b.rollout_id = $1) t
				WHERE pos >= $4`, id, ends, canaries, head)
			if err != nil {
				return err
			}
			inserted = tag.RowsAffected()
		}
		_, err = tx.Exec(ctx, `DELETE FROM tenantmigrate.rollout_backlog WHERE rollout_id = $1`, id)
		return err
	})
	if err != nil {
		return false, err
	}
	if busy {
		var t int64
		err := s.pool.QueryRow(ctx, `SELECT r.target_version FROM tenantmigrate.rollout_backlog b
			JOIN tenantmigrate.rollouts r ON r.id = b.rollout_id WHERE b.rollout_id = $1`, id).Scan(&t)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return t == target, nil
	}
	if inserted > 0 {
		s.analyze(ctx, id)
		s.logger.InfoContext(ctx, "rollout's later waves inserted", "rollout_id", id, "tenants", inserted)
	}
	if filled {
		// The tenants registered while the rest was inserted: AddLate added
		// none of them meanwhile (the fleet scan or migrate --all that
		// asked has moved on), so they join the last wave now. FAILED_STALE
		// tenants stay out, as without includeStale.
		if _, _, err := s.AddLate(ctx, target, false); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "add the tenants registered while the rollout's rest was inserted", "rollout_id", id, "err", err)
		}
	}
	return false, nil
}
