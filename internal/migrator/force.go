package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// Force sets the target's version table to version without running any migration, under the
// tenant's lock (and, for golang-migrate sources, golang-migrate's): for after a repair by
// hand.
//
//   - goose: the goose_db_version rows above version are deleted, and a row is added for each
//     source version up to version that has none (the table is created if needed);
//   - golang-migrate: schema_migrations is set to version, clean (empty for 0), which also
//     clears a dirty flag.
//
// Result.Version is version and Result.Applied is empty. A version above the source's latest,
// or below 0, is refused.
func (m *Migrator) Force(ctx context.Context, t Target, version int64) (Result, error) {
	start := time.Now()
	if version < 0 || version > m.Latest() {
		return Result{Version: -1}, fmt.Errorf("force version %d: want 0 to the latest version, %d", version, m.Latest())
	}
	res, err := m.force(ctx, t, version)
	res.Duration = time.Since(start)
	if err != nil {
		return res, redact.Error(err, t.DatabaseURL)
	}
	return res, nil
}

func (m *Migrator) force(ctx context.Context, t Target, version int64) (Result, error) {
	res := Result{Version: -1}
	conn, _, closeAll, err := m.openSession(ctx, t, true)
	if err != nil {
		return res, err
	}
	defer closeAll()

	if m.format == FormatGolangMigrate {
		table, _, err := resolveVersionTable(ctx, conn.QueryRowContext, t.Schema, m.versionTable, GolangMigrateTable)
		if err != nil {
			return res, err
		}
		unlock, err := m.gmLock(ctx, conn, t.Schema, table)
		if err != nil {
			return res, err
		}
		defer unlock()
		// Under the lock: created only when missing, so that only a new table is marked.
		exists, err := versionTableExists(ctx, conn.QueryRowContext, table)
		if err != nil {
			return res, err
		}
		if !exists {
			if err := createGMVersionTable(ctx, conn, table, t.Schema); err != nil {
				return res, err
			}
		}
		v := version
		if v == 0 {
			v = -1 // NilVersion
		}
		if err := setGMVersionClean(ctx, conn, table, v); err != nil {
			return res, fmt.Errorf("set version %d: %w", version, err)
		}
		res.Version = version
		return res, nil
	}

	table, exists, err := resolveVersionTable(ctx, conn.QueryRowContext, t.Schema, m.versionTable, goose.DefaultTablename)
	if err != nil {
		return res, err
	}
	unlock, err := m.ownLock(ctx, conn, t.Schema)
	if err != nil {
		return res, err
	}
	defer unlock()
	store, err := newTableStore(table, t.Schema)
	if err != nil {
		return res, err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return res, fmt.Errorf("force version %d: %w", version, err)
	}
	defer func() { _ = tx.Rollback() }() // after Commit, a no-op
	if !exists {
		if err := store.CreateVersionTable(ctx, tx); err != nil {
			return res, fmt.Errorf("create version table %s: %w", table, err)
		}
		if err := store.Insert(ctx, tx, database.InsertRequest{Version: 0}); err != nil {
			return res, fmt.Errorf("create version table %s: %w", table, err)
		}
	}
	rows, err := store.ListMigrations(ctx, tx)
	if err != nil {
		return res, fmt.Errorf("read versions: %w", err)
	}
	have := map[int64]bool{}
	for _, r := range rows {
		have[r.Version] = true
		if r.Version > version {
			if err := store.Delete(ctx, tx, r.Version); err != nil {
				return res, fmt.Errorf("delete version %d: %w", r.Version, err)
			}
		}
	}
	for _, v := range m.versions {
		if v <= version && !have[v] {
			if err := store.Insert(ctx, tx, database.InsertRequest{Version: v}); err != nil {
				return res, fmt.Errorf("add version %d: %w", v, err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return res, fmt.Errorf("force version %d: %w", version, err)
	}
	res.Version = version
	return res, nil
}

// ownLock takes tenantmigrate's advisory lock of the target on conn, waiting at most
// LockTimeout, and returns the function that releases it. The key is the one goose's session
// locker takes in Migrate and Down, so a force never overlaps a run.
func (m *Migrator) ownLock(ctx context.Context, conn *sql.Conn, schema string) (func(), error) {
	key := m.dbLockKey
	if schema != "" {
		key = lockKey(schema)
	}
	var lockTimeout, stmtTimeout string
	if err := conn.QueryRowContext(ctx, "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')").Scan(&lockTimeout, &stmtTimeout); err != nil {
		return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	// lock_timeout bounds the wait; statement_timeout must not cut it shorter (57014 is not
	// retryable), so it is off while the lock is taken.
	if _, err := conn.ExecContext(ctx, "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', '0', false)", durationParam(m.lockWait)); err != nil {
		return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", key); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			return nil, fmt.Errorf("%w (waited %s)", ErrLockTimeout, m.lockWait)
		}
		return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	unlock := func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), unlockTimeout)
		defer cancel()
		_, _ = conn.ExecContext(uctx, "SELECT pg_advisory_unlock($1)", key)
	}
	if _, err := conn.ExecContext(ctx, "SELECT set_config('lock_timeout', $1, false), set_config('statement_timeout', $2, false)", lockTimeout, stmtTimeout); err != nil {
		unlock()
		return nil, fmt.Errorf("acquire tenant migration lock: %w", err)
	}
	return unlock, nil
}
