package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file applies a golang-migrate source (FormatGolangMigrate) the way golang-migrate v4's
// `migrate up` with its postgres driver does (database/postgres/postgres.go, migrate.go), so
// that tenants migrated by it are adopted as they are and the migrate CLI keeps working on them
// before, during and after adoption:
//
//   - The version table is golang-migrate's schema_migrations (version bigint not null primary
//     key, dirty boolean not null): one row, the tenant's version. Where it lives is pinned as
//     for goose's table (resolveVersionTable): in the tenant's schema for schema-per-tenant,
//     marked as the schema tenant's (schemaTenantMark); in the one schema of the database that
//     has it, else public, for database-per-tenant, never a schema tenant's.
//   - Each migration marks the tenant dirty at its version before it runs and clean after,
//     each mark a TRUNCATE and an INSERT in one transaction, as SetVersion does. A failure or a
//     crash in between leaves the tenant dirty, visible to both tools, and a dirty tenant is
//     never migrated (*DirtyError) until someone repairs it and clears the flag.
//   - A file runs as golang-migrate runs it by default: its whole text in one Exec, with no
//     transaction of Migrate's own. PostgreSQL runs a multi-statement query in one implicit
//     transaction, so a file either applies whole or not at all, unless it says otherwise: a
//     BEGIN/COMMIT in it behaves as it does under golang-migrate, and a file that is one
//     CREATE INDEX CONCURRENTLY works (PostgreSQL refuses it with other statements in the same
//     query, under both tools). Wrapping files in a transaction of our own would break exactly
//     those files, and running them differently than the migrate CLI does would make the two
//     tools disagree on what a file does.
//   - The lock: Migrate takes tenantmigrate's own advisory lock (as for goose sources) and then
//     golang-migrate's, with the key its postgres driver computes
//     (database.GenerateAdvisoryLockId(database, schema, table)), so a `migrate up` run by hand
//     and tenantmigrate never migrate one tenant at once. See gmLockKeys.
//   - Down files are loaded and kept, never applied.

// GolangMigrateTable is golang-migrate's default version table name, schema_migrations.
const GolangMigrateTable = "schema_migrations"

// gmAdvisoryLockSalt is golang-migrate's advisoryLockIDSalt (database/util.go).
const gmAdvisoryLockSalt = 1486364155

// gmLockKeys returns the advisory lock keys golang-migrate's postgres driver takes for table in
// the database named database: crc32(schema NUL table NUL databaseName) times its salt, in
// 32 bits. The driver's databaseName is the URL's path when it is opened by URL (the migrate
// CLI, migrate.New: "/" and the name) and current_database() when it is given a *sql.DB
// (postgres.WithInstance), so both keys are taken.
func gmLockKeys(database string, table VersionTable) []int64 {
	key := func(databaseName string) int64 {
		sum := crc32.ChecksumIEEE([]byte(table.Schema + "\x00" + table.Name + "\x00" + databaseName))
		return int64(sum * gmAdvisoryLockSalt)
	}
	return []int64{key("/" + database), key(database)}
}

// gmState is a tenant's schema_migrations row.
type gmState struct {
	exists  bool  // the table exists
	version int64 // -1 when there is no table or no row (golang-migrate's NilVersion)
	dirty   bool
}

// current is the version as Result.Version and Pending report it: 0 for none.
func (s gmState) current() int64 { return max(s.version, 0) }

// readGMState reads the schema_migrations row of table, which exists or not.
func readGMState[R interface{ Scan(...any) error }](ctx context.Context, queryRow queryRower[R], table VersionTable, exists bool) (gmState, error) {
	if !exists {
		return gmState{version: -1}, nil
	}
	st := gmState{exists: true}
	err := queryRow(ctx, "SELECT version, dirty FROM "+table.String()+" LIMIT 1").Scan(&st.version, &st.dirty)
	if errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows) {
		return gmState{exists: true, version: -1}, nil
	}
	if err != nil {
		return gmState{}, fmt.Errorf("read version: %w", err)
	}
	return st, nil
}

// gmPending returns the source's migrations above version, in order: golang-migrate applies the
// versions after the recorded one and has no notion of a lower version missing.
func (m *Migrator) gmPending(version int64) []gmMigration {
	for i, g := range m.gm {
		if g.version > version {
			return m.gm[i:]
		}
	}
	return nil
}

// gmPendingVersions is gmPending's versions.
func (m *Migrator) gmPendingVersions(version int64) []int64 {
	var out []int64
	for _, g := range m.gmPending(version) {
		out = append(out, g.version)
	}
	return out
}

// gmApplied returns the source versions a tenant in state st has: every one up to its version,
// and its version itself when the source lacks it (a newer build applied it). A dirty version
// is not applied.
func (m *Migrator) gmApplied(st gmState) []int64 {
	applied := []int64{}
	top := st.version
	if st.dirty {
		top--
	}
	found := false
	for _, v := range m.versions {
		if v <= top {
			applied = append(applied, v)
			found = found || v == top
		}
	}
	if !found && !st.dirty && st.version > 0 {
		applied = append(applied, st.version)
	}
	return applied
}

// createGMVersionTable is golang-migrate's ensureVersionTable, schema-qualified. For a schema
// tenant (schema set) it also marks the table as the tenant's (see schemaTenantMark), in the
// same query: without arguments, pgx sends it with the simple protocol, in one round trip, and
// PostgreSQL runs its two statements in one implicit transaction.
func createGMVersionTable(ctx context.Context, conn *sql.Conn, table VersionTable, schema string) error {
	q := "CREATE TABLE IF NOT EXISTS " + table.String() + " (version bigint not null primary key, dirty boolean not null)"
	if schema != "" {
		q += ";\n" + markStatement(table, schema)
	}
	if _, err := conn.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("create version table %s: %w", table, err)
	}
	return nil
}

// setGMVersion records version and dirty as golang-migrate's SetVersion does: TRUNCATE and
// INSERT in one transaction.
func setGMVersion(ctx context.Context, conn *sql.Conn, table VersionTable, version int64, dirty bool) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	if _, err := tx.ExecContext(ctx, "TRUNCATE "+table.String()); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO "+table.String()+" (version, dirty) VALUES ($1, $2)", version, dirty); err != nil {
		return err
	}
	return tx.Commit()
}

// migrateGolangMigrate is Migrate for a golang-migrate source. See the comment at the top of
// this file.
func (m *Migrator) migrateGolangMigrate(ctx context.Context, t Target, start time.Time) (res Result, err error) {
	res.Version = -1
	defer func() { res.Duration = time.Since(start) }()

	// One session for everything: the advisory locks are the session's.
	conn, target, closeAll, err := m.openSession(ctx, t, true)
	if err != nil {
		return res, err
	}
	defer closeAll()

	// Without the lock first: the common case, nothing to do, costs no lock.
	table, exists, err := resolveVersionTable(ctx, conn.QueryRowContext, t.Schema, m.versionTable, GolangMigrateTable)
	if err != nil {
		return res, err
	}
	st, err := readGMState(ctx, conn.QueryRowContext, table, exists)
	if err != nil {
		return res, err
	}
	res.Version = st.current()
	if st.dirty {
		return res.dirtyAt(m, st)
	}
	if len(capPending(m.gmPending(st.version), t.UpTo)) == 0 {
		return res, nil
	}

	unlock, err := m.gmLock(ctx, conn, t.Schema, table)
	if err != nil {
		return res, err
	}
	defer unlock()

	// Under the lock, again: another run (ours or golang-migrate's) may have finished meanwhile.
	if exists, err = versionTableExists(ctx, conn.QueryRowContext, table); err != nil {
		return res, err
	}
	if st, err = readGMState(ctx, conn.QueryRowContext, table, exists); err != nil {
		return res, err
	}
	res.Version = st.current()
	if st.dirty {
		return res.dirtyAt(m, st)
	}
	pending := capPending(m.gmPending(st.version), t.UpTo)
	if len(pending) == 0 {
		return res, nil
	}
	if t.CheckUpTo != nil {
		if err := t.CheckUpTo(ctx); err != nil {
			return res, err
		}
	}
	if err := m.repairInvalidIndexes(ctx, conn, t.Schema, target); err != nil {
		return res, err
	}
	if !exists {
		if err := createGMVersionTable(ctx, conn, table, t.Schema); err != nil {
			return res, err
		}
	}

	for _, g := range pending {
		began := time.Now()
		if err := setGMVersion(ctx, conn, table, g.version, true); err != nil {
			return res, fmt.Errorf("mark version %d dirty before applying it: %w", g.version, err)
		}
		// The whole file in one Exec without arguments: pgx sends it with the simple protocol,
		// as one multi-statement query, as golang-migrate does (it skips a blank file too).
		if body := string(g.up); strings.TrimSpace(body) != "" {
			if _, err := conn.ExecContext(ctx, body); err != nil {
				return res, &ApplyError{Version: g.version, Name: g.upName, Err: &leftDirtyError{err: err, dirty: &DirtyError{Version: g.version}}}
			}
		}
		if err := setGMVersion(ctx, conn, table, g.version, false); err != nil {
			return res, &ApplyError{Version: g.version, Name: g.upName,
				Err: &leftDirtyError{err: fmt.Errorf("mark clean after applying: %w", err), dirty: &DirtyError{Version: g.version}}}
		}
		res.Applied = append(res.Applied, g.version)
		res.Version = g.version
		m.logger.DebugContext(ctx, "migration applied", target,
			slog.Int64("version", g.version), slog.String("source", g.upName),
			slog.Int64("duration_ms", time.Since(began).Milliseconds()))
	}
	m.logger.DebugContext(ctx, "tenant migrated", target,
		slog.Int64("version", res.Version), slog.Int("applied", len(res.Applied)),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()))
	return res, nil
}

// gmLock takes, on conn, tenantmigrate's advisory lock of the target and then golang-migrate's
// (gmLockKeys), each waiting at most LockTimeout (PostgreSQL's lock_timeout bounds an advisory
// lock wait), and returns the function that releases them. Always in this order, so two
// tenantmigrate runs cannot deadlock; golang-migrate takes one lock only and waits holding none.
// A wait that times out is an error wrapping ErrLockTimeout.
func (m *Migrator) gmLock(ctx context.Context, conn *sql.Conn, schema string, table VersionTable) (func(), error) {
	var database, lockTimeout, stmtTimeout string
	if err := conn.QueryRowContext(ctx, "SELECT current_database(), current_setting('lock_timeout'), current_setting('statement_timeout')").Scan(&database, &lockTimeout, &stmtTimeout); err != nil {
		return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	own := m.dbLockKey
	if schema != "" {
		own = lockKey(schema)
	}
	keys := append([]int64{own}, gmLockKeys(database, table)...)

	var held []int64
	unlock := func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		for i := len(held) - 1; i >= 0; i-- {
			// An error leaves the lock to the end of the session, which follows at once.
			_, _ = conn.ExecContext(uctx, "SELECT pg_advisory_unlock($1)", held[i])
		}
		held = nil
	}
	// lock_timeout bounds the wait; statement_timeout must not cut it shorter (57014 is not
	// retryable), so it is off while the locks are taken.
	if _, err := conn.ExecContext(ctx, "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', '0', false)", durationParam(m.lockWait)); err != nil {
		return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	for _, k := range keys {
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", k); err != nil {
			unlock()
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
				return nil, fmt.Errorf("%w (waited %s; a golang-migrate `migrate` may be running on it)", ErrLockTimeout, m.lockWait)
			}
			return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
		}
		held = append(held, k)
	}
	if _, err := conn.ExecContext(ctx, "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)", lockTimeout, stmtTimeout); err != nil {
		unlock()
		return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	return unlock, nil
}

// readGMTarget reads a golang-migrate target's version table in a read-only session, for
// Pending and Inspect.
func (m *Migrator) readGMTarget(ctx context.Context, t Target) (gmState, VersionTable, error) {
	connCfg, err := m.connConfig(t)
	if err != nil {
		return gmState{}, VersionTable{}, err
	}
	connCfg.RuntimeParams["default_transaction_read_only"] = "on"
	conn, err := pgx.ConnectConfig(ctx, connCfg)
	if err != nil {
		return gmState{}, VersionTable{}, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	table, exists, err := resolveVersionTable(ctx, conn.QueryRow, t.Schema, m.versionTable, GolangMigrateTable)
	if err != nil {
		return gmState{}, table, err
	}
	st, err := readGMState(ctx, conn.QueryRow, table, exists)
	return st, table, err
}

// dirtyAt is the result of a run refused because the tenant is dirty: its version is the last
// one applied successfully (below the dirty one), as Result.Version says of a failure.
func (res Result) dirtyAt(m *Migrator, st gmState) (Result, error) {
	res.Version = 0
	if applied := m.gmApplied(st); len(applied) > 0 {
		res.Version = applied[len(applied)-1]
	}
	return res, &DirtyError{Version: st.version}
}
