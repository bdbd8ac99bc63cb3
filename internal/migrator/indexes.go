package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrInvalidIndexes is wrapped by the *InvalidIndexesError that [Migrator.Migrate] returns when
// Config.KeepInvalidIndexes is set and the target has invalid indexes while migrations are
// pending. Nothing was applied. It is not retryable: someone has to drop the indexes (or let
// the Migrator do it).
var ErrInvalidIndexes = errors.New("invalid indexes")

// InvalidIndex is an index that PostgreSQL marks INVALID (pg_index.indisvalid = false) and that
// no session is building.
type InvalidIndex struct {
	// Schema is the schema of the index and of its table.
	Schema string
	// Name is the index's name.
	Name string
	// Table is the name of the indexed table.
	Table string
}

// String returns the quoted, qualified name of the index.
func (i InvalidIndex) String() string { return pgx.Identifier{i.Schema, i.Name}.Sanitize() }

func (i InvalidIndex) table() string { return pgx.Identifier{i.Schema, i.Table}.Sanitize() }

// InvalidIndexesError lists the invalid indexes that stopped a run (see
// Config.KeepInvalidIndexes). It wraps ErrInvalidIndexes.
type InvalidIndexesError struct {
	// Indexes are the invalid indexes, by schema and name.
	Indexes []InvalidIndex
}

func (e *InvalidIndexesError) Error() string {
	names := make([]string, len(e.Indexes))
	drops := make([]string, len(e.Indexes))
	for i, ix := range e.Indexes {
		names[i] = ix.String() + " on " + ix.table()
		drops[i] = "DROP INDEX CONCURRENTLY " + ix.String() + ";"
	}
	return fmt.Sprintf("%s left by a failed or interrupted CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY: %s; "+
		"the pending migrations would not build them again (IF NOT EXISTS skips an invalid index). "+
		"Fix: %s then migrate again (or turn off KeepInvalidIndexes to let tenantmigrate drop them)",
		ErrInvalidIndexes, strings.Join(names, ", "), strings.Join(drops, " "))
}

// Unwrap returns ErrInvalidIndexes.
func (e *InvalidIndexesError) Unwrap() error { return ErrInvalidIndexes }

// lockedCheckError carries the error of a check that runs on the locked session (see
// tenantLocker.afterLock) through goose, so Migrate can return it without goose's wording.
type lockedCheckError struct{ err error }

func (e *lockedCheckError) Error() string { return e.err.Error() }
func (e *lockedCheckError) Unwrap() error { return e.err }

// invalidIndexCheck returns the afterLock hook of one run: with migrations pending it finds the
// invalid indexes of the target's namespace and drops them, or reports them (KeepInvalidIndexes).
//
// It runs on the session that holds the tenant's advisory lock, so no other tenantmigrate run
// builds an index in the target now. An application may, though, and an index under
// construction is INVALID too. So an index is only treated as abandoned when:
//
//   - pg_stat_progress_create_index shows no build of it (nor a REINDEX of its table), and
//   - a SHARE UPDATE EXCLUSIVE lock on its table, which every concurrent index build holds until
//     it ends, is granted within the session's lock_timeout (5s when that is off), and the
//     index is still invalid under that lock.
//
// A build the first look could not see (the view hides other roles' sessions from roles without
// pg_read_all_stats) therefore makes the lock wait time out: the run fails with SQLSTATE 55P03,
// which IsRetryable reports as retryable, and nothing is dropped. Partitioned indexes (relkind
// 'I') are never touched: one created ON ONLY a partitioned table stays invalid, by design,
// until its partitions' indexes are attached.
func (m *Migrator) invalidIndexCheck(schema string, table VersionTable, target slog.Attr) func(context.Context, *sql.Conn) error {
	return func(ctx context.Context, conn *sql.Conn) error {
		pending, err := hasPendingOn(ctx, conn, table, m.versions, m.allowMissing)
		if err != nil || !pending {
			return err
		}
		return m.repairInvalidIndexes(ctx, conn, schema, target)
	}
}

// repairInvalidIndexes drops (or, with KeepInvalidIndexes, reports) the abandoned invalid
// indexes of the target's namespace; see invalidIndexCheck. The caller holds the tenant's lock
// on conn and has migrations pending.
func (m *Migrator) repairInvalidIndexes(ctx context.Context, conn *sql.Conn, schema string, target slog.Attr) error {
	candidates, err := listInvalidIndexes(ctx, conn, schema)
	if err != nil {
		return err
	}
	var abandoned []InvalidIndex
	for _, c := range candidates {
		if c.building {
			m.logger.InfoContext(ctx, "invalid index is being built by another session; left alone",
				target, slog.String("index", c.String()), slog.String("table", c.table()))
			continue
		}
		still, err := m.stillInvalidWhenIdle(ctx, conn, c)
		if err != nil {
			return fmt.Errorf("check invalid index %s: %w", c, err)
		}
		if still {
			abandoned = append(abandoned, c.InvalidIndex)
		}
	}
	if len(abandoned) == 0 {
		return nil
	}
	if !m.repairIndexes {
		return &InvalidIndexesError{Indexes: abandoned}
	}
	for _, ix := range abandoned {
		// IF EXISTS: the application may have dropped it meanwhile.
		if _, err := conn.ExecContext(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+ix.String()); err != nil {
			return fmt.Errorf("drop invalid index %s: %w", ix, err)
		}
		m.logger.WarnContext(ctx, "dropped invalid index left by a failed or interrupted concurrent build; the pending migrations build it again",
			target, slog.String("index", ix.String()), slog.String("table", ix.table()))
	}
	return nil
}

// hasPendingOn reports whether source has versions the target has not applied, reading the
// version table on conn. Without a version table everything is pending. When the target misses
// versions below its current one (and out-of-order migrations are not allowed), it reports
// false: goose refuses to run such a target anyway, with its own error.
func hasPendingOn(ctx context.Context, conn *sql.Conn, table VersionTable, source []int64, allowMissing bool) (bool, error) {
	exists, err := versionTableExists(ctx, conn.QueryRowContext, table)
	if err != nil || !exists {
		return !exists, err
	}
	rows, err := conn.QueryContext(ctx, "SELECT version_id FROM "+table.String())
	if err != nil {
		return false, fmt.Errorf("list applied versions: %w", err)
	}
	defer rows.Close()
	var applied []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return false, fmt.Errorf("list applied versions: %w", err)
		}
		applied = append(applied, v)
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("list applied versions: %w", err)
	}
	_, pending, err := upVersions(source, applied, allowMissing)
	return err == nil && len(pending) > 0, nil
}

// invalidIndexColumns are the columns of an invalidIndexCandidate, for the two queries below:
// the index's schema, name and table, and its oid. Whether a session is building it is asked
// only when there are candidates (buildingIndexes): planning that part (a view over
// pg_stat_get_progress_info) cost a new session ~0.7 ms of the server's CPU, every tenant run,
// and a tenant run almost never finds an invalid index (BENCHMARKS.md section 11).
const invalidIndexColumns = `
	SELECT n.nspname, ic.relname, tc.relname, ic.oid::bigint`

// buildingIndexes returns which of the indexes $1 (oids) pg_stat_progress_create_index shows
// a build of, or a REINDEX of their table.
const buildingIndexes = `
	SELECT i.indexrelid::bigint FROM pg_catalog.pg_index i
	WHERE i.indexrelid = ANY ($1::bigint[]::oid[])
		AND EXISTS (
			SELECT 1 FROM pg_catalog.pg_stat_progress_create_index p
			WHERE p.datid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
				AND (p.index_relid = i.indexrelid
					OR (p.relid = i.indrelid AND p.command LIKE 'REINDEX%'))
		)`

const invalidIndexesInDatabase = invalidIndexColumns + `
	FROM pg_catalog.pg_index i
	JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
	JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid
	JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
	WHERE NOT i.indisvalid
		AND ic.relkind = 'i'
		AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
	ORDER BY n.nspname, ic.relname`

// invalidIndexesInSchema lists the invalid indexes of schema $1 without reading the other
// schemas' rows: a database of schema tenants holds every tenant's indexes in one pg_index
// (10,000 schemas: ~230,000 rows, whose sequential scan the whole-database query costs every
// run), and neither pg_class nor pg_index has an index by schema. pg_depend has: every
// relation but a TOAST table or composite type records a dependency on its schema (heap.c,
// heap_create_with_catalog; ALTER ... SET SCHEMA moves it), and an index always lives in its
// table's schema, so the indexes of the schema's relations are exactly its indexes.
const invalidIndexesInSchema = invalidIndexColumns + `
	FROM pg_catalog.pg_namespace n
	JOIN pg_catalog.pg_depend d ON d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass
		AND d.refobjid = n.oid AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
	JOIN pg_catalog.pg_index i ON i.indrelid = d.objid
	JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
	JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid
	WHERE n.nspname = $1
		AND NOT i.indisvalid
		AND ic.relkind = 'i'
	ORDER BY n.nspname, ic.relname`

// invalidIndexCandidate is an invalid index with what pg_stat_progress_create_index says about
// it.
type invalidIndexCandidate struct {
	InvalidIndex
	oid      int64
	building bool
}

// listInvalidIndexes returns the invalid (non-partitioned) indexes in schema, or, for a
// database target (schema ""), in every schema of the database but the system's: the tenant
// owns the whole database, and the session's search_path may name other schemas than the run
// that built an index (a migration can create the schema search_path names first).
func listInvalidIndexes(ctx context.Context, conn *sql.Conn, schema string) ([]invalidIndexCandidate, error) {
	query, args := invalidIndexesInDatabase, []any(nil)
	if schema != "" {
		query, args = invalidIndexesInSchema, []any{schema}
	}
	rows, err := conn.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list invalid indexes: %w", err)
	}
	defer rows.Close()
	var out []invalidIndexCandidate
	for rows.Next() {
		var c invalidIndexCandidate
		if err := rows.Scan(&c.Schema, &c.Name, &c.Table, &c.oid); err != nil {
			return nil, fmt.Errorf("list invalid indexes: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list invalid indexes: %w", err)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return markBuilding(ctx, conn, out)
}

// markBuilding sets building on the candidates that pg_stat_progress_create_index shows a
// build of (see buildingIndexes).
func markBuilding(ctx context.Context, conn *sql.Conn, candidates []invalidIndexCandidate) ([]invalidIndexCandidate, error) {
	oids := make([]int64, len(candidates))
	for i, c := range candidates {
		oids[i] = c.oid
	}
	rows, err := conn.QueryContext(ctx, buildingIndexes, oids)
	if err != nil {
		return nil, fmt.Errorf("list index builds: %w", err)
	}
	defer rows.Close()
	building := map[int64]bool{}
	for rows.Next() {
		var oid int64
		if err := rows.Scan(&oid); err != nil {
			return nil, fmt.Errorf("list index builds: %w", err)
		}
		building[oid] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list index builds: %w", err)
	}
	for i := range candidates {
		candidates[i].building = building[candidates[i].oid]
	}
	return candidates, nil
}

// stillInvalidWhenIdle waits (at most lock_timeout) until no session holds a lock on the
// index's table that a concurrent index build holds, and reports whether the index still
// exists and is invalid then: whether it was abandoned. A build still running makes the wait
// time out with SQLSTATE 55P03.
func (m *Migrator) stillInvalidWhenIdle(ctx context.Context, conn *sql.Conn, c invalidIndexCandidate) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := tx.ExecContext(ctx, "SET LOCAL lock_timeout = '"+m.repairLockTimeout()+"'"); err != nil {
		return false, err
	}
	// Conflicts with CREATE INDEX CONCURRENTLY, REINDEX CONCURRENTLY, VACUUM and ANALYZE (an
	// autovacuum worker in the way cancels itself), not with reads and writes.
	if _, err := tx.ExecContext(ctx, "LOCK TABLE "+c.table()+" IN SHARE UPDATE EXCLUSIVE MODE"); err != nil {
		return false, fmt.Errorf("wait for builds on table %s to end: %w", c.table(), err)
	}
	var invalid bool
	err = tx.QueryRowContext(ctx,
		`SELECT NOT indisvalid FROM pg_catalog.pg_index WHERE indexrelid = $1::bigint::oid`, c.oid).Scan(&invalid)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil // dropped meanwhile
	}
	if err != nil {
		return false, err
	}
	return invalid, tx.Commit()
}

// repairLockTimeout is the lock_timeout of the wait in stillInvalidWhenIdle: the session's, or
// DefaultTenantLockTimeout when lock_timeout is off, so that a build in progress fails the run
// (retryably) instead of holding it until the build ends.
func (m *Migrator) repairLockTimeout() string {
	if m.lockTimeoutParam == "0" {
		return durationParam(DefaultTenantLockTimeout)
	}
	return m.lockTimeoutParam
}
