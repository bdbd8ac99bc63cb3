// Package history owns the run history: one row in tenantmigrate.runs per
// run of the migrator on one tenant, whatever triggered it. The one executor
// (internal/run) writes a row per Migrate call with Store.Record; the admin
// API and the CLI read a tenant's runs with Store.List, newest first; the
// fleet page reads the recent per-tenant durations with Store.Durations,
// and rollout ETAs (internal/rollouts) with ReadDurations; a Pruner deletes
// the rows older than the retention in bounded batches.
package history

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// The run history's types are public (package tenanttype).
type (
	// Run is tenanttype.Run, one row of the runs table.
	Run = tenanttype.Run
	// Result is tenanttype.RunResult.
	Result = tenanttype.RunResult
	// Durations is tenanttype.RunDurations.
	Durations = tenanttype.RunDurations
)

// Results of a run.
const (
	ResultCompleted   = tenanttype.RunCompleted
	ResultFailed      = tenanttype.RunFailed
	ResultInterrupted = tenanttype.RunInterrupted
)

// DirectionUp is tenanttype.DirectionUp. The table also takes "down" and
// "force".
const DirectionUp = tenanttype.DirectionUp

const (
	// DefaultPageSize is List's page size when its limit is 0.
	DefaultPageSize = 50
	// MaxPageSize is the largest limit List accepts.
	MaxPageSize = 1000
	// MaxErrorLen is the most characters of a run's error that are kept.
	MaxErrorLen = 2000
)

var (
	// ErrInvalidCursor is wrapped by List's error for a cursor it did not
	// hand out.
	ErrInvalidCursor = errors.New("invalid cursor")
	// ErrInvalidLimit is wrapped by List's error for a limit below 0 or
	// above MaxPageSize.
	ErrInvalidLimit = errors.New("invalid limit")
)

// Store reads and writes the runs table. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	process string
}

// NewStore returns a Store on the control-plane pool. process names this
// process in the rows Record writes whose Process is empty; "" means
// Process().
func NewStore(pool *pgxpool.Pool, process string) *Store {
	if process == "" {
		process = Process()
	}
	return &Store{pool: pool, process: process}
}

// Process is the default name of this process in the history: "host:pid".
func Process() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// Record writes one run, in one INSERT. Its ID is ignored; an empty
// Direction is DirectionUp, an empty Process the Store's. The error is cut to
// MaxErrorLen characters (and made valid UTF-8 without NUL); it must already
// be free of passwords.
func (s *Store) Record(ctx context.Context, r Run) error {
	return s.RecordIn(ctx, s.pool, r)
}

// Execer runs a statement: a pool, a connection or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// RecordIn is Record through db, for instance in the transaction that
// records what the run did, so that both commit or neither does.
func (s *Store) RecordIn(ctx context.Context, db Execer, r Run) error {
	return s.recordIn(ctx, db, r, 0)
}

// RecordOnTarget is Record of a run on the tenant's target targetSeq
// (tenants.target_seq as the run read it; 0: unknown).
func (s *Store) RecordOnTarget(ctx context.Context, r Run, targetSeq int64) error {
	return s.recordIn(ctx, s.pool, r, targetSeq)
}

func (s *Store) recordIn(ctx context.Context, db Execer, r Run, targetSeq int64) error {
	if r.Direction == "" {
		r.Direction = DirectionUp
	}
	if r.Process == "" {
		r.Process = s.process
	}
	_, err := db.Exec(ctx, `
		INSERT INTO tenantmigrate.runs (tenant_id, rollout_id, from_version, to_version, direction, result,
			error, attempt, started_at, finished_at, process, trigger, target_seq)
		VALUES ($1, NULLIF($2, ''), $3, $4, $5, $6, NULLIF($7, ''), $8, $9, $10, $11, $12, NULLIF($13, 0))`,
		r.TenantID, r.RolloutID, r.FromVersion, r.ToVersion, r.Direction, string(r.Result),
		truncate(r.Error, MaxErrorLen), r.Attempt, r.StartedAt, r.FinishedAt, r.Process, r.Trigger, targetSeq)
	if err != nil {
		return fmt.Errorf("record run of tenant %s: %w", r.TenantID, err)
	}
	return nil
}

// runColumns are the columns scanRun reads, in its order.
const runColumns = `id, tenant_id, coalesce(rollout_id, ''), from_version, to_version, direction, result,
	coalesce(error, ''), attempt, started_at, finished_at, process, trigger`

// List returns up to limit runs of tenant id (DefaultPageSize when limit is
// 0), newest first (by start, then id), after cursor ("" for the first
// page), and the cursor of the next page ("" when there is none). It does
// not check that the tenant exists: an unknown one has no runs. It returns an
// error wrapping ErrInvalidCursor or ErrInvalidLimit for bad paging.
func (s *Store) List(ctx context.Context, tenantID, cursor string, limit int) ([]Run, string, error) {
	if limit < 0 || limit > MaxPageSize {
		return nil, "", fmt.Errorf("list runs: %w: %d: want 1 to %d, or 0 for %d", ErrInvalidLimit, limit, MaxPageSize, DefaultPageSize)
	}
	if limit == 0 {
		limit = DefaultPageSize
	}
	var (
		rows pgx.Rows
		err  error
	)
	// One more than asked tells whether there is a next page.
	if cursor == "" {
		rows, err = s.pool.Query(ctx, `SELECT `+runColumns+` FROM tenantmigrate.runs
			WHERE tenant_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2`, tenantID, limit+1)
	} else {
		c, perr := parseCursor(cursor)
		if perr != nil {
			return nil, "", fmt.Errorf("list runs: %w", perr)
		}
		rows, err = s.pool.Query(ctx, `SELECT `+runColumns+` FROM tenantmigrate.runs
			WHERE tenant_id = $1 AND (started_at, id) < ($2, $3)
			ORDER BY started_at DESC, id DESC LIMIT $4`, tenantID, c.startedAt, c.id, limit+1)
	}
	if err != nil {
		return nil, "", fmt.Errorf("list runs of tenant %s: %w", tenantID, err)
	}
	runs, err := pgx.CollectRows(rows, scanRun)
	if err != nil {
		return nil, "", fmt.Errorf("list runs of tenant %s: %w", tenantID, err)
	}
	if len(runs) <= limit {
		return runs, "", nil
	}
	runs = runs[:limit]
	last := runs[limit-1]
	return runs, formatCursor(pageCursor{startedAt: last.StartedAt, id: last.ID}), nil
}

func scanRun(row pgx.CollectableRow) (Run, error) {
	var (
		r      Run
		result string
	)
	err := row.Scan(&r.ID, &r.TenantID, &r.RolloutID, &r.FromVersion, &r.ToVersion, &r.Direction, &result,
		&r.Error, &r.Attempt, &r.StartedAt, &r.FinishedAt, &r.Process, &r.Trigger)
	r.Result = Result(result)
	return r, err
}

// pageCursor is where a page of List ends: its last run's start and id.
type pageCursor struct {
	startedAt time.Time
	id        int64
}

// formatCursor encodes c as "<start in Unix microseconds>.<id>" (the
// database keeps microseconds).
func formatCursor(c pageCursor) string {
	return strconv.FormatInt(c.startedAt.UnixMicro(), 10) + "." + strconv.FormatInt(c.id, 10)
}

// parseCursor reads what formatCursor wrote, and nothing else.
func parseCursor(s string) (pageCursor, error) {
	micros, id, ok := strings.Cut(s, ".")
	if !ok || len(s) > 41 {
		return pageCursor{}, fmt.Errorf("%w %q", ErrInvalidCursor, shorten(s))
	}
	us, err1 := strconv.ParseInt(micros, 10, 64)
	n, err2 := strconv.ParseInt(id, 10, 64)
	if err1 != nil || err2 != nil || n <= 0 || us < 0 ||
		// PostgreSQL's timestamptz ends in the year 294276.
		us > 9_224_318_015_999_999 ||
		strconv.FormatInt(us, 10) != micros || strconv.FormatInt(n, 10) != id {
		return pageCursor{}, fmt.Errorf("%w %q", ErrInvalidCursor, shorten(s))
	}
	return pageCursor{startedAt: time.UnixMicro(us), id: n}, nil
}

// shorten cuts outside input quoted in an error message.
func shorten(s string) string { return truncate(s, 64) }

// Prune deletes up to batch runs (at least 1) that started before before,
// oldest first, and returns how many it deleted. Rows another Prune holds are
// skipped (FOR UPDATE SKIP LOCKED), so instances prune side by side without
// waiting for each other or deleting a row twice.
func (s *Store) Prune(ctx context.Context, before time.Time, batch int) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM tenantmigrate.runs WHERE id IN (
			SELECT id FROM tenantmigrate.runs WHERE started_at < $1
			ORDER BY started_at LIMIT $2
			FOR UPDATE SKIP LOCKED)`, before, max(batch, 1))
	if err != nil {
		return 0, fmt.Errorf("prune run history: %w", err)
	}
	return tag.RowsAffected(), nil
}

// truncate makes s storable as text (valid UTF-8 without NUL) and cuts it
// to n characters, the last one an ellipsis when it was cut.
func truncate(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	runes := []rune(s)
	return string(runes[:n-1]) + "…"
}
