package rollouts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmigrate/tenantmigrate/internal/labels"
)

// createLockKey is the advisory lock that serialises the creation of
// rollouts (any value unlikely to clash; it is the fnv hash of
// "tenantmigrate.rollouts").
const createLockKey int64 = 0x1c2f7a43b6d0e915

// behindWhere selects the tenants behind $1, as
// controlplane.Store.ScanBehind with includeStale does.
const behindWhere = `(migrations_version < $1 OR migrations_version IS NULL
	OR (migrations_status IN ('FAILED', 'FAILED_STALE') AND migrations_version = $1))`

// TakeOverAfter is how long a tenant handed to the queue may wait for its
// job before a migrate --all with nothing else to run takes it over.
const TakeOverAfter = 10 * time.Second

// DefaultStaleClaim is how long a QUEUED tenant whose job is gone (no live
// migrate_tenant job names it) waits before Step puts it back to PENDING (settleStale), to be handed out again. A
// feeder claims a tenant and queues its job in one transaction, and a job
// records its result (Done) before it ends, so such a tenant's run ended
// without a result: its job was cancelled by a halt that a resume cleared
// meanwhile, its enqueue met a live job of another release that then
// ended, or its result was lost. Nothing else will run it, so the wait is
// short: long enough for a job that just ended to have recorded its result.
const DefaultStaleClaim = 30 * time.Second

// legacyRunnerTimeout is how long a job running on a client with no
// instance row (a release before heartbeats) may run before a migrate --all
// takes its tenant over.
const legacyRunnerTimeout = 10 * time.Minute

// Store reads and writes rollouts in the control plane. It is safe for
// concurrent use, and any number of Stores (in any number of processes) may
// work on the same rollouts.
type Store struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	// StaleClaim is DefaultStaleClaim unless a test shortens it.
	StaleClaim time.Duration
	// StartHead is DefaultStartHead unless a test shortens it.
	StartHead int64
}

// NewStore returns a Store on the control-plane pool. logger receives the
// halts (once each, at error level, from the Store that halted) and the
// state changes at info; nil discards.
func NewStore(pool *pgxpool.Pool, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{pool: pool, logger: logger, StaleClaim: DefaultStaleClaim, StartHead: DefaultStartHead}
}

// Options are what a new rollout is made with.
type Options struct {
	// CanarySelector selects the tenants of the first wave; empty: none.
	CanarySelector string
	// Waves are the cumulative wave sizes; nil: the default.
	Waves []WaveSize
	// HaltFailureRate is the failure rate a wave may not exceed: 0 means
	// DefaultHaltFailureRate, negative means 0 (the first failure halts).
	HaltFailureRate float64
	// WavePause is the wait between a wave passing and the next starting.
	WavePause time.Duration
	// CreatedBy names the creator, for operators ("fleet scan", "migrate
	// --all", "admin API").
	CreatedBy string
	// IncludeStale takes in the FAILED_STALE tenants behind. Without it
	// they are left out, as scans leave them out, except those that failed
	// in the rollout this one supersedes (a fixing release must reach
	// them).
	IncludeStale bool
}

// Ensure returns the rollout for target, creating it when there is none and
// tenants are behind target. It returns nil (and no error) when no tenant is
// behind, or when an active rollout for a higher target exists (a newer
// release owns the fleet). Creating a rollout supersedes the active one of a
// lower target. created reports whether this call created it.
func (s *Store) Ensure(ctx context.Context, target int64, opts Options) (r *Rollout, created bool, err error) {
	canary, err := labels.Parse(opts.CanarySelector)
	if err != nil {
		return nil, false, fmt.Errorf("%w canary selector: %w", ErrInvalid, err)
	}
	if existing, err := s.byTarget(ctx, target); err != nil || existing != nil {
		return existing, false, err
	}
	rate := opts.HaltFailureRate
	switch {
	case rate == 0:
		rate = DefaultHaltFailureRate
	case rate < 0:
		rate = 0
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("create rollout to %d: %w", target, err)
	}
	defer conn.Release()
	// A session lock, taken before the transaction's snapshot, so the
	// transaction sees a rollout another creator committed while we waited.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, createLockKey); err != nil {
		return nil, false, fmt.Errorf("create rollout to %d: %w", target, err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(cctx, `SELECT pg_advisory_unlock($1)`, createLockKey); uerr != nil {
			conn.Conn().Close(cctx) // drops the lock with the session
		}
	}()

	var (
		id        int64
		head, tot int64
	)
	err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, func(tx pgx.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.rollouts
			WHERE target_version = $1 OR (state IN ('RUNNING', 'HALTED') AND target_version > $1)`, target).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return errExists
		}
		// The rollouts this one supersedes: their failed tenants are in it
		// even when FAILED_STALE.
		rows, err := tx.Query(ctx, `SELECT id FROM tenantmigrate.rollouts WHERE state IN ('RUNNING', 'HALTED') AND target_version < $1`, target)
		if err != nil {
			return err
		}
		superseded, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE tenantmigrate.rollouts
			SET state = 'SUPERSEDED', finished_at = now(), updated_at = now(),
				halt_reason = coalesce(halt_reason || '; ', '') || 'superseded by the rollout to version ' || $1
			WHERE state IN ('RUNNING', 'HALTED') AND target_version < $1`, target); err != nil {
			return err
		}
		// The row first (one active rollout: after the supersession), so
		// that the backlog can reference it; its total and waves follow
		// from the members, counted by the backlog's insert below. Nothing
		// behind rolls all of it back.
		if err := tx.QueryRow(ctx, `INSERT INTO tenantmigrate.rollouts
			(target_version, state, canary_selector, wave_ends, halt_failure_rate, wave_pause_ms, total, created_by)
			VALUES ($1, 'RUNNING', $2, '{0}', $3, $4, 0, $5) RETURNING id`,
			target, canary.String(), rate, opts.WavePause.Milliseconds(), opts.CreatedBy).Scan(&id); err != nil {
			return err
		}

		// The members, in one scan of the transaction's snapshot: the
		// canaries are counted, every other member's id goes into the
		// backlog. This fixes the membership once: whatever happens to the
		// tenants afterwards (migrated by a request, added, relabelled,
		// deleted), the rows inserted later are those of this snapshot.
		// (An exported snapshot, pg_export_snapshot, would die with the
		// process holding it, and a take-over would have to recompute the
		// members from tenants that have changed since; the ids, stored,
		// outlive every process. Recording an order key and selecting the
		// tenants behind above it later would drop the members migrated in
		// between and take in tenants added since, shifting the positions.)
		canaryExpr := "false"
		cond, args := canary.SQL("labels", 4)
		if !canary.Empty() {
			canaryExpr = cond
		}
		// FAILED_STALE tenants come in with includeStale, or when they are
		// unfinished members of the rollouts this one supersedes: FAILED
		// there, or QUEUED or PENDING there with the failure recorded in
		// tenants but not yet in that rollout (the run records the tenant
		// first; its result then lands on a superseded rollout, and counts
		// nowhere).
		members := behindWhere + ` AND ($2 OR migrations_status IS DISTINCT FROM 'FAILED_STALE'
			OR id IN (SELECT tenant_id FROM tenantmigrate.rollout_tenants WHERE rollout_id = ANY($3) AND state IN ('FAILED', 'QUEUED', 'PENDING')))`
		base := append([]any{target, opts.IncludeStale, superseded}, args...)
		next := "$" + fmt.Sprint(len(base)+1) // the parameter after base
		var canaries, rest int64
		if err := tx.QueryRow(ctx, `INSERT INTO tenantmigrate.rollout_backlog (rollout_id, head, canaries, tenant_ids)
			SELECT `+next+`::bigint, 0, count(*) FILTER (WHERE c), coalesce(array_agg(id) FILTER (WHERE NOT c), '{}')
			FROM (SELECT id, (`+canaryExpr+`) AS c FROM tenantmigrate.tenants WHERE `+members+`) m
			RETURNING canaries, cardinality(tenant_ids)`, append(base, id)...).Scan(&canaries, &rest); err != nil {
			return err
		}
		tot = canaries + rest
		if tot == 0 {
			return errNothingBehind
		}
		ends := WaveEnds(tot, canaries, opts.Waves)
		head = headEnd(ends, canaries, s.StartHead)
		if _, err := tx.Exec(ctx, `UPDATE tenantmigrate.rollouts SET total = $2, wave_ends = $3 WHERE id = $1`, id, tot, ends); err != nil {
			return err
		}

		// The head, in the order of the whole: canaries first, then a hash
		// of the id that does not depend on when a tenant was added, so a
		// rerun gets the same waves. Its non-canaries are the first of the
		// backlog in that order: a top-N (no full sort) read from the
		// table in this same snapshot, which, unlike an INSERT ... SELECT,
		// may use parallel workers.
		rows, err = tx.Query(ctx, `SELECT id FROM (
				SELECT id, true AS c FROM tenantmigrate.tenants WHERE `+members+` AND (`+canaryExpr+`)
				UNION ALL
				(SELECT id, false FROM tenantmigrate.tenants WHERE `+members+` AND NOT (`+canaryExpr+`)
					ORDER BY md5(id), id LIMIT `+next+`)) u
			ORDER BY c DESC, md5(id), id`, append(base, head-canaries)...)
		if err != nil {
			return err
		}
		headIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if int64(len(headIDs)) != head {
			return fmt.Errorf("rollout head: %d tenants, want %d", len(headIDs), head)
		}
		_, err = tx.Exec(ctx, `INSERT INTO tenantmigrate.rollout_tenants (rollout_id, tenant_id, wave, position)
			SELECT $1, id, width_bucket(pos - 1, $3::bigint[]), pos - 1 FROM unnest($2::text[]) WITH ORDINALITY AS h (id, pos)`,
			id, headIDs, ends)
		if err != nil {
			return err
		}
		if head == tot {
			_, err = tx.Exec(ctx, `DELETE FROM tenantmigrate.rollout_backlog WHERE rollout_id = $1`, id)
		} else {
			_, err = tx.Exec(ctx, `UPDATE tenantmigrate.rollout_backlog SET head = $2 WHERE rollout_id = $1`, id, head)
		}
		return err
	})
	switch {
	case errors.Is(err, errExists), isUnique(err):
		r, err := s.byTarget(ctx, target)
		return r, false, err
	case errors.Is(err, errNothingBehind):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("create rollout to %d: %w", target, err)
	}
	if head == tot {
		// Statistics for the new rows, so the first claims use the partial
		// indexes rather than a plan made for an empty table. (With a
		// backlog, Fill does it once the rest is in.)
		s.analyze(ctx, id)
	}
	r, err = s.Get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	s.logger.InfoContext(ctx, "rollout started", "rollout_id", id, "version", target, "tenants", r.Total,
		"waves", len(r.WaveEnds), "canary_selector", r.CanarySelector, "halt_failure_rate", r.HaltFailureRate, "created_by", opts.CreatedBy,
		"tenants_inserted_later", tot-head)
	return r, true, nil
}

var (
	errExists        = errors.New("rollout exists")
	errNothingBehind = errors.New("no tenant behind")
)

// byTarget returns the rollout for target, or nil.
func (s *Store) byTarget(ctx context.Context, target int64) (*Rollout, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT id FROM tenantmigrate.rollouts WHERE target_version = $1`, target).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rollout to %d: %w", target, err)
	}
	return s.Get(ctx, id)
}

// ByTarget returns the rollout for target, or nil when there is none.
func (s *Store) ByTarget(ctx context.Context, target int64) (*Rollout, error) {
	return s.byTarget(ctx, target)
}

// Admit returns a *HaltedError when the rollout to target is halted, and
// nil otherwise: it is asked before every run of a tenant at target.
func (s *Store) Admit(ctx context.Context, target int64) error {
	var (
		id     int64
		reason string
	)
	err := s.pool.QueryRow(ctx, `SELECT id, coalesce(halt_reason, '') FROM tenantmigrate.rollouts
		WHERE state = 'HALTED' AND target_version = $1`, target).Scan(&id, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read rollout to %d: %w", target, err)
	}
	return &HaltedError{RolloutID: id, TargetVersion: target, Reason: reason}
}

// Result is the end of one run of a tenant, for Done.
type Result struct {
	TenantID string
	// Status is COMPLETED, FAILED (retried later: the tenant stays in
	// flight) or FAILED_STALE (the tenant failed in the rollout).
	Status   string
	Duration time.Duration
	// Err and FailedVersion describe a failure.
	Err           string
	FailedVersion int64
}

// Done records a run of a tenant of the active rollout to target (nothing
// when the tenant is not in it) and halts the rollout when the tenant's
// wave can no longer pass. It reports whether this call halted it; the halt
// is then logged, here, once for the whole fleet. A member whose row is not
// inserted yet (Fill) is recorded once the rest is in: Done inserts it, or
// waits for the process inserting it (a minute at a million tenants, once
// per rollout, for the runs that end in that minute outside the head).
func (s *Store) Done(ctx context.Context, target int64, res Result) (halted bool, err error) {
	rolloutID, wave, final, err := s.record(ctx, target, res)
	if errors.Is(err, pgx.ErrNoRows) {
		// The tenant may be a member not inserted yet (the rollout's later
		// waves, Store.Fill): a request or a migrate-now ran it before its
		// turn. Its result counts all the same (a broken release halts
		// whoever ran it), so the rest is inserted, by this call or the
		// process inserting it, and the result recorded then. Recorded
		// again even when awaitFill finds no backlog: a Fill that committed
		// after the record above (its snapshot) inserted the row since.
		if _, ferr := s.awaitFill(ctx, target); ferr != nil {
			return false, ferr
		}
		rolloutID, wave, final, err = s.record(ctx, target, res)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("record tenant %s in rollout to %d: %w", res.TenantID, target, err)
	}
	if final != "FAILED" {
		return false, nil
	}
	// The rollout's row first, as Step takes it: a halt and a resume by
	// others cannot then land between the failure count and the halt.
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM tenantmigrate.rollouts WHERE id = $1 FOR NO KEY UPDATE`, rolloutID); err != nil {
			return err
		}
		halted, err = s.haltIfFailed(ctx, tx, rolloutID, wave)
		return err
	})
	return halted, err
}

// awaitFill inserts the backlog of the rollout to target, or waits for the
// process inserting it, and reports whether there was one.
func (s *Store) awaitFill(ctx context.Context, target int64) (filled bool, err error) {
	for {
		var backlog bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenantmigrate.rollout_backlog b
			JOIN tenantmigrate.rollouts r ON r.id = b.rollout_id WHERE r.target_version = $1)`, target).Scan(&backlog); err != nil {
			return filled, fmt.Errorf("read backlog of rollout to %d: %w", target, err)
		}
		if !backlog {
			return filled, nil
		}
		filled = true
		waiting, err := s.Fill(ctx, target)
		if err != nil {
			return filled, err
		}
		if !waiting {
			return filled, nil
		}
		select {
		case <-ctx.Done():
			return filled, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// record writes res into the tenant's row of the active rollout to target;
// pgx.ErrNoRows when the rollout holds no such row.
func (s *Store) record(ctx context.Context, target int64, res Result) (rolloutID int64, wave int, final string, err error) {
	err = s.pool.QueryRow(ctx, `UPDATE tenantmigrate.rollout_tenants rt
		SET state = CASE $3 WHEN 'COMPLETED' THEN 'COMPLETED' WHEN 'FAILED_STALE' THEN 'FAILED' ELSE rt.state END,
			attempts = rt.attempts + 1,
			last_error = NULLIF($4, ''),
			failed_version = NULLIF($5, 0::bigint),
			duration_ms = $6,
			finished_at = CASE WHEN $3 IN ('COMPLETED', 'FAILED_STALE') THEN now() END
		FROM tenantmigrate.rollouts r
		WHERE r.id = rt.rollout_id AND r.target_version = $1 AND r.state IN ('RUNNING', 'HALTED')
			AND rt.tenant_id = $2 AND rt.state <> 'REMOVED'
		RETURNING r.id, rt.wave, rt.state`,
		target, res.TenantID, res.Status, truncate(res.Err), res.FailedVersion, res.Duration.Milliseconds()).Scan(&rolloutID, &wave, &final)
	return rolloutID, wave, final, err
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// haltIfFailed halts RUNNING rollout id when wave has more failed tenants
// than its threshold, and logs the halt when it did.
func (s *Store) haltIfFailed(ctx context.Context, q querier, id int64, wave int) (bool, error) {
	var (
		target, size, failed, limit int64
		reason                      string
	)
	err := q.QueryRow(ctx, `WITH r AS (
			SELECT id, target_version, halt_failure_rate,
				wave_ends[$2 + 1] - coalesce(wave_ends[$2], 0) AS size
			FROM tenantmigrate.rollouts WHERE id = $1 AND state = 'RUNNING'),
		f AS (SELECT count(*) AS failed FROM tenantmigrate.rollout_tenants WHERE rollout_id = $1 AND wave = $2 AND state = 'FAILED'),
		first AS (SELECT tenant_id, coalesce(failed_version, 0) AS v, coalesce(last_error, '') AS e
			FROM tenantmigrate.rollout_tenants WHERE rollout_id = $1 AND wave = $2 AND state = 'FAILED'
			ORDER BY finished_at, tenant_id LIMIT 1)
		SELECT r.target_version, r.size, f.failed, floor(r.halt_failure_rate * r.size + 1e-9)::bigint,
			coalesce((SELECT 'first: tenant ' || tenant_id || CASE WHEN v > 0 THEN ' at version ' || v ELSE '' END || ': ' || e FROM first), '')
		FROM r, f WHERE f.failed > floor(r.halt_failure_rate * r.size + 1e-9)`, id, wave).
		Scan(&target, &size, &failed, &limit, &reason)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("check wave %d of rollout %d: %w", wave+1, id, err)
	}
	reason = fmt.Sprintf("wave %d of %d tenants: %d failed, more than the %d allowed; %s", wave+1, size, failed, limit, reason)
	var haltedID int64
	err = q.QueryRow(ctx, `UPDATE tenantmigrate.rollouts SET state = 'HALTED', halt_reason = $2, updated_at = now()
		WHERE id = $1 AND state = 'RUNNING' RETURNING id`, id, truncate(reason)).Scan(&haltedID)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil // another instance halted it first, and logged it
	}
	if err != nil {
		return false, fmt.Errorf("halt rollout %d: %w", id, err)
	}
	s.logger.ErrorContext(ctx, "rollout halted: no tenant is migrated to its version until it is resumed (tenantmigrate rollout resume) or aborted",
		"rollout_id", id, "version", target, "wave", wave+1, "failed", failed, "wave_size", size, "reason", reason)
	return true, nil
}

// Step advances the active rollout to target: it settles tenants whose job
// is gone, halts a wave that can no longer pass, passes a finished wave
// (completing the rollout after the last one, or opening the next after the
// wave pause). Several instances may call it at once; one does the work and
// the others return at once. It returns the rollout's state afterwards,
// "" when target has no rollout.
func (s *Store) Step(ctx context.Context, target int64) (State, error) {
	var state State
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// FOR NO KEY UPDATE (Step changes no key): it excludes the other
		// steppers and the claims (FOR SHARE), but not the foreign-key
		// checks of a Fill inserting the rollout's rest for seconds.
		var (
			id          int64
			wave, waves int
			pauseMS     int64
			doneAt      *time.Time
		)
		err := tx.QueryRow(ctx, `SELECT id, state, current_wave, cardinality(wave_ends), wave_pause_ms, wave_done_at
			FROM tenantmigrate.rollouts WHERE target_version = $1 FOR NO KEY UPDATE SKIP LOCKED`, target).
			Scan(&id, &state, &wave, &waves, &pauseMS, &doneAt)
		if errors.Is(err, pgx.ErrNoRows) {
			// None, or another instance is stepping it.
			return tx.QueryRow(ctx, `SELECT coalesce(max(state), '') FROM tenantmigrate.rollouts WHERE target_version = $1`, target).Scan(&state)
		}
		if err != nil || state != StateRunning {
			return err
		}
		if err := s.settleStale(ctx, tx, id, target, wave); err != nil {
			return err
		}
		halted, err := s.haltIfFailed(ctx, tx, id, wave)
		if err != nil || halted {
			state = StateHalted
			return err
		}
		// The wave is open while a tenant of it is to run or running, or
		// while it ends beyond the rollout's head and the rest is still
		// being inserted (Fill): a first wave that finished before then must
		// not find the next one empty and complete the rollout. One
		// statement, one snapshot: Fill's commit inserts the rows and
		// deletes the backlog at once, so it sees one or the other.
		var open bool
		if err := tx.QueryRow(ctx, waveOpenQuery, id, wave).Scan(&open); err != nil || open {
			return err
		}
		// The wave finished. Its failures again, in a snapshot taken after
		// the one that found it finished: a result recorded between the two
		// statements (the last tenant of the wave failing, say) finished
		// it, and the check above did not see it. Without this the wave
		// passed on the failure that should halt it, and the next wave's
		// tenants were handed out until some later check halted it.
		if halted, err := s.haltIfFailed(ctx, tx, id, wave); err != nil || halted {
			state = StateHalted
			return err
		}
		// The wave finished and passed.
		switch {
		case wave+1 >= waves:
			state = StateCompleted
			_, err = tx.Exec(ctx, `UPDATE tenantmigrate.rollouts SET state = 'COMPLETED', finished_at = now(), updated_at = now() WHERE id = $1`, id)
			if err == nil {
				s.logger.InfoContext(ctx, "rollout completed", "rollout_id", id, "version", target)
			}
		case doneAt == nil:
			_, err = tx.Exec(ctx, `UPDATE tenantmigrate.rollouts SET wave_done_at = now(), updated_at = now() WHERE id = $1`, id)
			if err == nil && pauseMS <= 0 {
				err = s.openNext(ctx, tx, id, target, wave)
			}
		case time.Since(*doneAt) >= time.Duration(pauseMS)*time.Millisecond:
			err = s.openNext(ctx, tx, id, target, wave)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("advance rollout to %d: %w", target, err)
	}
	return state, nil
}

// waveOpenQuery ($1 rollout, $2 wave) is whether wave has a tenant to run
// or running, or members not yet inserted (Step); pendingLeftQuery whether
// any wave up to $2 has a tenant to run (settleStale). Both run once or
// twice per tenant that ends, so each reads the partial indexes
// (rollout_tenants_pending_idx, _queued_idx) and never the table. Written
// as EXISTS over "state IN (...)" or over the PENDING rows, the planner
// took a sequential scan whenever the statistics still said most rows
// were PENDING (as they do from the rollout's creation until autovacuum
// analyzes it), and that scan reads past every tenant already done: 13 to
// 66 buffers over a 10,000-schema run (BENCHMARKS.md section 11.3), the
// whole table near the end of a rollout of 1M. For the PENDING rows, ORDER
// BY the index's own order and LIMIT 1, in a scalar subquery (EXISTS drops
// ORDER BY), leaves the index the only cheap plan; the QUEUED rows are the
// few in flight, and the planner reads their index for EXISTS already.
const (
	waveOpenQuery = `SELECT (SELECT true FROM tenantmigrate.rollout_tenants
			WHERE rollout_id = $1 AND wave = $2 AND state = 'PENDING' ORDER BY position LIMIT 1) IS NOT NULL
		OR EXISTS (SELECT 1 FROM tenantmigrate.rollout_tenants
			WHERE rollout_id = $1 AND wave = $2 AND state = 'QUEUED')
		OR EXISTS (SELECT 1 FROM tenantmigrate.rollout_backlog b, tenantmigrate.rollouts r
			WHERE b.rollout_id = $1 AND r.id = $1 AND r.wave_ends[$2 + 1] > b.head)`
	pendingLeftQuery = `SELECT (SELECT true FROM tenantmigrate.rollout_tenants
			WHERE rollout_id = $1 AND wave <= $2 AND state = 'PENDING' ORDER BY wave, position LIMIT 1) IS NOT NULL`
)

func (s *Store) openNext(ctx context.Context, tx pgx.Tx, id, target int64, wave int) error {
	_, err := tx.Exec(ctx, `UPDATE tenantmigrate.rollouts SET current_wave = $2, wave_done_at = NULL, updated_at = now() WHERE id = $1`, id, wave+1)
	if err == nil {
		s.logger.InfoContext(ctx, "rollout wave passed; next wave started", "rollout_id", id, "version", target, "wave", wave+2)
	}
	return err
}

// settleStale settles the QUEUED tenants of the open waves whose run ended
// without Done (a tenant removed, a job lost, a run by another path): by
// the tenant's recorded state when it tells (COMPLETED at the target, or
// FAILED_STALE since the claim with no live job left), else, when no live
// job names the tenant and its claimer is dead or, for a feeder's claim
// (no claimer: its run is a job), the claim is older than StaleClaim, back
// to PENDING. A live claimer's claim (a migrate --all running it) is left
// to it, however long its migration runs. It
// runs only when nothing is left to hand out in the open waves, so its cost
// is bounded by the tenants in flight.
//
// The conditions on rt, the row updated, are what a result recorded while
// the statement waited for that row is re-checked against (READ
// COMMITTED re-evaluates only the updated row; q and t keep the versions
// of the statement's snapshot): a member that is no longer the QUEUED
// claim the statement saw is left as it now is.
func (s *Store) settleStale(ctx context.Context, tx pgx.Tx, id, target int64, wave int) error {
	var pending bool
	if err := tx.QueryRow(ctx, pendingLeftQuery, id, wave).Scan(&pending); err != nil || pending {
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants rt
		SET state = CASE
				WHEN t.id IS NULL THEN 'REMOVED'
				WHEN t.migrations_version >= $3 AND t.migrations_status = 'COMPLETED' THEN 'COMPLETED'
				WHEN t.migrations_version > $3 THEN 'COMPLETED'
				WHEN t.migrations_status = 'FAILED_STALE' AND t.updated_at > q.claimed_at THEN 'FAILED'
				ELSE 'PENDING' END,
			last_error = CASE WHEN t.migrations_status = 'FAILED_STALE' AND t.updated_at > q.claimed_at THEN t.last_error ELSE rt.last_error END,
			finished_at = now(), claimed_at = NULL, claimed_by = NULL
		FROM tenantmigrate.rollout_tenants q
		LEFT JOIN tenantmigrate.tenants t ON t.id = q.tenant_id
		WHERE q.rollout_id = $1 AND q.wave <= $2 AND q.state = 'QUEUED'
			AND rt.rollout_id = q.rollout_id AND rt.tenant_id = q.tenant_id
			AND rt.state = 'QUEUED' AND rt.claimed_at IS NOT DISTINCT FROM q.claimed_at
			AND (t.id IS NULL OR t.migrations_version >= $3 AND t.migrations_status = 'COMPLETED' OR t.migrations_version > $3
				OR (t.migrations_status = 'FAILED_STALE' AND t.updated_at > q.claimed_at OR q.claimed_by IS NULL AND q.claimed_at < now() - $4::interval
						OR q.claimed_by IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_locks l
							WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
								AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
								AND l.classid = (q.claimed_by >> 32)::oid AND l.objid = (q.claimed_by & 4294967295)::oid))
					AND NOT EXISTS (SELECT 1 FROM tenantmigrate.river_job j
						WHERE j.kind = 'migrate_tenant' AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
							AND j.args->>'tenant_id' = q.tenant_id))`,
		id, wave, target, s.StaleClaim.String())
	return err
}

// claimerAlive is true when the Claimer whose key is rt.claimed_by holds its
// lock (its session, and so its process, lives).
const claimerAlive = `EXISTS (SELECT 1 FROM pg_locks l
	WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND l.classid = (rt.claimed_by >> 32)::oid AND l.objid = (rt.claimed_by & 4294967295)::oid)`

// runnerDead is true when the instance running river_job j (the last of
// attempted_by) is dead, as internal/instances judges it: stopped, or silent
// for longer than its timeout; or, for a client with no instance row (an
// older release), when the attempt began more than $6
// (legacyRunnerTimeout) ago.
const runnerDead = `(EXISTS (SELECT 1 FROM tenantmigrate.instances i
		WHERE i.id = j.attempted_by[cardinality(j.attempted_by)]
			AND (i.stopped_at IS NOT NULL OR i.heartbeat_at + i.timeout < now()))
	OR j.attempted_at < now() - $6::interval AND NOT EXISTS (SELECT 1 FROM tenantmigrate.instances i
		WHERE i.id = j.attempted_by[cardinality(j.attempted_by)]))`

// claimOrder closes a claim's statement, "WITH c AS (...) UPDATE ...
// RETURNING tenant_id, wave, position", into one that returns the claimed
// ids (an UPDATE's RETURNING comes in no set order) by wave, then round
// by round over the servers of the wave's claimed tenants: each server's
// first tenant, in position order, then each one's second, and so on.
// Tenants whose server is not known yet (tenants.server NULL) count as one
// server.
const claimOrder = `)
	SELECT u.tenant_id FROM u LEFT JOIN tenantmigrate.tenants t ON t.id = u.tenant_id
	ORDER BY u.wave, row_number() OVER (PARTITION BY u.wave, t.server ORDER BY u.position), u.position`

// Claim hands out up to n PENDING tenants of the open waves of the RUNNING
// rollout to target, in wave order, marking them QUEUED, and calls enqueue
// with them in the same transaction (nil: the caller runs them itself, as
// migrate --all does, and claimer is the key of its Claimer). Concurrent
// claims get disjoint tenants. It returns nothing when the rollout is not
// running.
//
// Which tenants a claim takes is the rollout's order (wave, then
// position); the order it returns them in, within each wave, has their
// database servers take turns (claimOrder): the queue fetches jobs in the
// order they were inserted, and a server's cap holds back all but a few
// of its tenants' jobs at once, so a batch with one server's tenants first
// would leave the other servers idle until those jobs had each been
// fetched and put back.
func (s *Store) Claim(ctx context.Context, target int64, n int, claimer int64, enqueue func(ctx context.Context, tx pgx.Tx, ids []string) error) ([]string, error) {
	if n <= 0 {
		return nil, nil
	}
	var ids []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The rollout first, shared-locked so a halt (which updates it)
		// waits for this claim or comes before it; then the claim with the
		// rollout's id and wave as constants, so the partial index hands
		// out the first PENDING rows in order without sorting them all.
		var (
			id   int64
			wave int
		)
		err := tx.QueryRow(ctx, `SELECT id, current_wave FROM tenantmigrate.rollouts
			WHERE target_version = $1 AND state = 'RUNNING' FOR SHARE`, target).Scan(&id, &wave)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `WITH c AS (
				SELECT tenant_id FROM tenantmigrate.rollout_tenants
				WHERE rollout_id = $1 AND state = 'PENDING' AND wave <= $2
				ORDER BY wave, position LIMIT $3 FOR UPDATE SKIP LOCKED),
			u AS (UPDATE tenantmigrate.rollout_tenants rt SET state = 'QUEUED', claimed_at = now(), claimed_by = NULLIF($4, 0::bigint)
			FROM c WHERE rt.rollout_id = $1 AND rt.tenant_id = c.tenant_id
			RETURNING rt.tenant_id, rt.wave, rt.position`+claimOrder, id, wave, n, claimer)
		if err != nil {
			return err
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(ids) == 0 && claimer != 0 {
			// Nothing left to hand out: a process that runs tenants itself
			// takes over the queued ones nobody is working on rather than
			// wait for them: those handed to the queue whose job waits (no
			// instance of this release may be there to work it: a rolling
			// deploy, servers stopped), at once those of a claimer that died
			// (its lock is gone), whatever job of theirs waits in the queue
			// (nothing may work it), and either kind when the job running
			// it is on an instance that died (nothing rescues it without an
			// instance working the queue). A job running on a live instance
			// is left to it; a duplicate run waits on the tenant's lock and
			// finds it done.
			rows, err := tx.Query(ctx, `WITH c AS (
					SELECT tenant_id FROM tenantmigrate.rollout_tenants rt
					WHERE rollout_id = $1 AND state = 'QUEUED' AND wave <= $2
						AND (claimed_by IS NULL AND claimed_at < now() - $5::interval
							OR claimed_by IS NOT NULL AND claimed_by <> $4 AND NOT `+claimerAlive+`)
						AND NOT EXISTS (SELECT 1 FROM tenantmigrate.river_job j
							WHERE j.kind = 'migrate_tenant' AND j.state = 'running' AND j.args->>'tenant_id' = rt.tenant_id
								AND NOT `+runnerDead+`)
					ORDER BY wave, position LIMIT $3 FOR UPDATE SKIP LOCKED),
				u AS (UPDATE tenantmigrate.rollout_tenants rt SET claimed_at = now(), claimed_by = $4
				FROM c WHERE rt.rollout_id = $1 AND rt.tenant_id = c.tenant_id
				RETURNING rt.tenant_id, rt.wave, rt.position`+claimOrder, id, wave, n, claimer, TakeOverAfter.String(), legacyRunnerTimeout.String())
			if err != nil {
				return err
			}
			if ids, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
				return err
			}
		}
		if len(ids) == 0 || enqueue == nil {
			return nil
		}
		return enqueue(ctx, tx, ids)
	})
	if err != nil {
		return nil, fmt.Errorf("claim tenants of rollout to %d: %w", target, err)
	}
	return ids, nil
}

// Release puts claimed tenants that were never run back to PENDING (a
// migrate --all interrupted before it started them).
func (s *Store) Release(ctx context.Context, target int64, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	// The rollout's row first, FOR SHARE as a claim takes it: the other
	// writers of many rows at once (Step's settling of stale claims, Resume)
	// lock it before their rows, so that they and this update, whose rows
	// come in no particular order, take turns instead of deadlocking.
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM tenantmigrate.rollouts WHERE target_version = $1 FOR SHARE`, target); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants rt SET state = 'PENDING', claimed_at = NULL, claimed_by = NULL
			FROM tenantmigrate.rollouts r
			WHERE r.id = rt.rollout_id AND r.target_version = $1 AND rt.tenant_id = ANY($2) AND rt.state = 'QUEUED'`, target, ids)
		return err
	})
	if err != nil {
		return fmt.Errorf("release tenants of rollout to %d: %w", target, err)
	}
	return nil
}

// Holding returns up to limit QUEUED tenants of the open waves of the
// RUNNING rollout to target that claimer holds, in wave order. A migrate
// --all with nothing running asks it: the tenants it returns were run
// without their result reaching the rollout (see Release).
func (s *Store) Holding(ctx context.Context, target, claimer int64, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT rt.tenant_id FROM tenantmigrate.rollout_tenants rt
		JOIN tenantmigrate.rollouts r ON r.id = rt.rollout_id
		WHERE r.target_version = $1 AND r.state = 'RUNNING' AND rt.state = 'QUEUED' AND rt.wave <= r.current_wave
			AND rt.claimed_by = $2
		ORDER BY rt.wave, rt.position LIMIT $3`, target, claimer, limit)
	if err != nil {
		return nil, fmt.Errorf("read the tenants held in rollout to %d: %w", target, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the tenants held in rollout to %d: %w", target, err)
	}
	return ids, nil
}

// InFlight counts the QUEUED tenants of the rollout to target.
func (s *Store) InFlight(ctx context.Context, target int64) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.rollout_tenants rt
		JOIN tenantmigrate.rollouts r ON r.id = rt.rollout_id
		WHERE r.target_version = $1 AND rt.state = 'QUEUED'`, target).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count tenants in flight of rollout to %d: %w", target, err)
	}
	return n, nil
}

// Resume clears the halt of rollout id: the failed tenants of the waves not
// yet passed, and the tenants whose jobs the halt skipped, are handed out
// again, and the rollout continues. It returns ErrNotFound for an unknown
// id and an error wrapping ErrInvalid when the rollout is not halted.
func (s *Store) Resume(ctx context.Context, id int64) (*Rollout, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var wave int
		err := tx.QueryRow(ctx, `UPDATE tenantmigrate.rollouts SET state = 'RUNNING', halt_reason = NULL, updated_at = now()
			WHERE id = $1 AND state = 'HALTED' RETURNING current_wave`, id).Scan(&wave)
		if errors.Is(err, pgx.ErrNoRows) {
			return s.notInState(ctx, tx, id, "resume", StateHalted)
		}
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE tenantmigrate.rollout_tenants SET state = 'PENDING', claimed_at = NULL, finished_at = NULL
			WHERE rollout_id = $1 AND (state = 'QUEUED' OR state = 'FAILED' AND wave >= $2)`, id, wave)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "rollout resumed", "rollout_id", id)
	return s.Get(ctx, id)
}

// Abort stops rollout id for good: no wave is fed any more and nothing is
// refused; the tenants keep their state. It returns ErrNotFound for an
// unknown id and an error wrapping ErrInvalid when it is not RUNNING or
// HALTED.
func (s *Store) Abort(ctx context.Context, id int64) (*Rollout, error) {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE tenantmigrate.rollouts SET state = 'ABORTED', finished_at = now(), updated_at = now()
			WHERE id = $1 AND state IN ('RUNNING', 'HALTED')`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return s.notInState(ctx, tx, id, "abort", StateRunning, StateHalted)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "rollout aborted", "rollout_id", id)
	return s.Get(ctx, id)
}

func (s *Store) notInState(ctx context.Context, tx pgx.Tx, id int64, verb string, want ...State) error {
	var state State
	err := tx.QueryRow(ctx, `SELECT state FROM tenantmigrate.rollouts WHERE id = $1`, id).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s rollout %d: %w", verb, id, ErrNotFound)
	}
	if err != nil {
		return err
	}
	names := make([]string, len(want))
	for i, w := range want {
		names[i] = string(w)
	}
	return fmt.Errorf("%w: cannot %s rollout %d: it is %s, not %s", ErrInvalid, verb, id, state, strings.Join(names, " or "))
}

// truncate cuts an error message to a storable size.
func truncate(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	const maxLen = 2000
	if len(s) > maxLen {
		return strings.ToValidUTF8(s[:maxLen], "") + "…"
	}
	return s
}

// isUnique reports a unique violation (two creators racing, which the lock
// prevents; kept for safety).
func isUnique(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// claimerClass is the high half of the advisory lock keys of Claimers.
const claimerClass int64 = 0x746d6364 // "tmcd"

// Claimer is a process that runs the tenants it claims itself (migrate
// --all): while it lives it holds a session advisory lock, which tells the
// other processes that its QUEUED tenants are still being worked on. When it
// dies its session, and the lock, go, and Step hands its tenants out again.
type Claimer struct {
	Key  int64
	conn *pgxpool.Conn
}

// NewClaimer takes a new claimer lock on a connection of its own. Release
// it when the run ends.
func (s *Store) NewClaimer(ctx context.Context) (*Claimer, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("take rollout claimer lock: %w", err)
	}
	for range 10 {
		key := claimerClass<<32 | int64(rand.Uint32())
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil {
			conn.Release()
			return nil, fmt.Errorf("take rollout claimer lock: %w", err)
		}
		if ok {
			return &Claimer{Key: key, conn: conn}, nil
		}
	}
	conn.Release()
	return nil, errors.New("take rollout claimer lock: no free key")
}

// Release drops the claimer lock.
func (c *Claimer) Release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := c.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, c.Key); err != nil {
		_ = c.conn.Conn().Close(ctx) // the lock goes with the session
	}
	c.conn.Release()
}

// AddLate adds to the active rollout to target the tenants behind it that
// it does not hold (registered, or fallen behind, since it began), at the
// end of its last wave, in the order of the rest (md5 of the id).
// FAILED_STALE tenants come only with includeStale. It returns how many it
// added, and whether target has an active rollout: a caller that read the
// rollout as active before may find it ended since (its last tenant
// finished, Step completed it), and must then queue the tenants behind
// itself. It adds none, with active true, while the rollout's later waves
// are still being inserted (Fill): the members not yet inserted would look
// late, so tenants registered meanwhile are added by the Fill that inserts
// the rest.
func (s *Store) AddLate(ctx context.Context, target int64, includeStale bool) (added int64, active bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Lock the rollout first, in a statement of its own: the insert
		// below then takes its snapshot after a concurrent AddLate has
		// committed, and sees the tenants it added (within one statement,
		// the lock would wait but the snapshot would not, and both would
		// insert the same tenant). The same holds for a Step that completes
		// the rollout meanwhile: the lock waits for it, and the rollout is
		// then no longer active.
		tag, err := tx.Exec(ctx, `SELECT 1 FROM tenantmigrate.rollouts
			WHERE target_version = $1 AND state IN ('RUNNING', 'HALTED') FOR UPDATE`, target)
		if err != nil {
			return err
		}
		if active = tag.RowsAffected() > 0; !active {
			return nil
		}
		return tx.QueryRow(ctx, `WITH r AS (
			SELECT id, total, cardinality(wave_ends) AS waves FROM tenantmigrate.rollouts
			WHERE target_version = $1 AND state IN ('RUNNING', 'HALTED')
				AND NOT EXISTS (SELECT 1 FROM tenantmigrate.rollout_backlog b WHERE b.rollout_id = rollouts.id)
			FOR UPDATE),
		n AS (SELECT t.id, row_number() OVER (ORDER BY md5(t.id), t.id) AS rn
			FROM tenantmigrate.tenants t, r
			WHERE `+behindWhere+` AND ($2 OR t.migrations_status IS DISTINCT FROM 'FAILED_STALE')
				AND NOT EXISTS (SELECT 1 FROM tenantmigrate.rollout_tenants rt WHERE rt.rollout_id = r.id AND rt.tenant_id = t.id)),
		ins AS (INSERT INTO tenantmigrate.rollout_tenants (rollout_id, tenant_id, wave, position)
			SELECT r.id, n.id, r.waves - 1, r.total + n.rn - 1 FROM n, r RETURNING 1),
		c AS (SELECT count(*) AS n FROM ins),
		u AS (UPDATE tenantmigrate.rollouts SET total = total + c.n,
				wave_ends[cardinality(wave_ends)] = wave_ends[cardinality(wave_ends)] + c.n, updated_at = now()
			FROM c WHERE id = (SELECT id FROM r) AND c.n > 0 RETURNING 1)
		SELECT n FROM c`, target, includeStale).Scan(&added)
	})
	if err != nil {
		return 0, false, fmt.Errorf("add late tenants to rollout to %d: %w", target, err)
	}
	if added > 0 {
		s.logger.InfoContext(ctx, "tenants behind added to the last wave of the rollout", "version", target, "tenants", added)
	}
	return added, active, nil
}
