package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// After a catalog conflict, Migrate runs goose again for up to conflictRetryWindow (from the
// first conflict), each time after a random wait of up to conflictBackoff, doubled per retry up
// to conflictMaxBackoff. Many tenants contending for one catalog row (each holds it until its
// migration commits) take as many turns as there are tenants, so the window is generous.
const (
	conflictRetryWindow = 30 * time.Second
	conflictBackoff     = 50 * time.Millisecond
	conflictMaxBackoff  = time.Second
)

// versionQueryTimeout bounds the query that reads the target's version after a failed run, whose
// context may already be canceled.
const versionQueryTimeout = 10 * time.Second

// Migrate applies the pending migrations to the target, each in its own transaction unless the
// file says "-- +goose NO TRANSACTION" (or, in TransactionModeTenant, consecutive ones in one:
// see txmode.go), and returns what it did.
//
// It opens a connection to the target for the duration of the call only. For a schema target it
// first creates the schema if needed. Then, if anything is pending, it takes the tenant's session
// advisory lock (waiting at most Config.LockTimeout, else an error wrapping ErrLockTimeout),
// re-reads the applied versions under the lock and applies what is still pending. Concurrent
// runs on one tenant, in any process, therefore apply each migration once: the later run finds
// nothing left to do.
//
// Under the lock, before applying, it looks for INVALID indexes in the target's schema (or in
// every schema of its database, for a database-per-tenant target) that no session is
// building, the remains of a CREATE INDEX CONCURRENTLY that failed or was interrupted, and
// drops them so that the pending migrations build them again; or, with
// Config.KeepInvalidIndexes, returns an *InvalidIndexesError naming them and applies nothing.
// See Config.KeepInvalidIndexes.
//
// The version table is resolved first (see Config.VersionTable); an ambiguous one is a
// *VersionTableConflictError and nothing is applied.
//
// A migration that fails stops the run: its transaction is rolled back (a NO TRANSACTION
// migration keeps the statements that completed before the failing one, so such files should be
// safe to re-run), Result.Applied lists the versions applied before it and Result.Version is the
// last good version. The error is an *ApplyError naming the
// failing version and file; it wraps the database error (see IsRetryable). Error messages never
// contain the URL's password.
func (m *Migrator) Migrate(ctx context.Context, t Target) (Result, error) {
	start := time.Now()
	migrate := m.migrate
	if m.format == FormatGolangMigrate {
		migrate = m.migrateGolangMigrate
	}
	res, err := migrate(ctx, t, start)
	if err != nil {
		return res, redact.Error(err, t.DatabaseURL)
	}
	return res, nil
}

func (m *Migrator) migrate(ctx context.Context, t Target, start time.Time) (res Result, err error) {
	res.Version = -1
	defer func() { res.Duration = time.Since(start) }()

	db, target, err := m.openTarget(ctx, t, true)
	if err != nil {
		return res, err
	}
	defer db.Close()

	// A schema target's table has one place and Migrate does not need to know beforehand
	// whether it exists (the check under the lock and goose look): no query for it, one per
	// tenant less at fleet scale. A database target's is found in its database.
	var table VersionTable
	if t.Schema != "" {
		table = schemaVersionTable(t.Schema, m.versionTable, goose.DefaultTablename)
	} else if table, _, err = resolveVersionTable(ctx, db.QueryRowContext, t.Schema, m.versionTable, goose.DefaultTablename); err != nil {
		return res, err
	}
	afterLock := withUpToCheck(t, m.invalidIndexCheck(t.Schema, table, target))
	p, err := m.newProvider(db, t.Schema, table, afterLock)
	if err != nil {
		return res, err
	}

	// Up checks for pending migrations without the lock (the common no-op case costs no lock),
	// then takes the lock, lists the applied versions again and applies the rest.
	upTo := upToVersion(t.UpTo)
	upFn := func(ctx context.Context) ([]*goose.MigrationResult, error) { return p.UpTo(ctx, upTo) }
	if m.txMode == TransactionModeTenant {
		upFn = func(ctx context.Context) ([]*goose.MigrationResult, error) {
			return m.upTenant(ctx, p, db, t.Schema, table, afterLock, target, upTo)
		}
	}
	results, upErr := m.up(ctx, upFn, target)

	var partial *goose.PartialError
	errors.As(upErr, &partial)
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Version)
		m.logger.DebugContext(ctx, "migration applied",
			target,
			slog.Int64("version", r.Source.Version),
			slog.String("source", path.Base(r.Source.Path)),
			slog.Int64("duration_ms", r.Duration.Milliseconds()),
		)
	}

	// The version after the run. goose (without out-of-order migrations) only applies versions
	// above the highest one recorded, so the last applied one is the highest. Otherwise (nothing
	// applied, or AllowMissing, whose out-of-order versions come first but need not be the highest)
	// ask the target, unless it just proved unreachable: don't wait for it a second time.
	if n := len(res.Applied); n > 0 && !m.allowMissing {
		res.Version = res.Applied[n-1]
	} else if err := versionAfter(ctx, p, upErr, &res); err != nil {
		return res, err
	}

	switch {
	case upErr == nil:
		// Debug, not info: the caller (the Orchestrator) logs the outcome per tenant at info,
		// with the tenant's id, and one info line per tenant is enough at fleet scale.
		if len(res.Applied) > 0 {
			m.logger.DebugContext(ctx, "tenant migrated",
				target,
				slog.Int64("version", res.Version),
				slog.Int("applied", len(res.Applied)),
				slog.Int64("duration_ms", time.Since(start).Milliseconds()),
			)
		}
		return res, nil
	default:
		return res, m.runError("up", upErr, partial)
	}
}

// withUpToCheck runs t.CheckUpTo, when set, before check, under the tenant's lock.
func withUpToCheck(t Target, check func(context.Context, *sql.Conn) error) func(context.Context, *sql.Conn) error {
	if t.CheckUpTo == nil {
		return check
	}
	return func(ctx context.Context, conn *sql.Conn) error {
		if err := t.CheckUpTo(ctx); err != nil {
			return err
		}
		return check(ctx, conn)
	}
}

// versionAfter sets res.Version to the target's version after a goose run that ended with
// runErr, read under a context of its own (ctx may have ended), unless the run just proved the
// target unreachable: don't wait for it a second time. A failed read is the error only after a
// run that succeeded; after a failed run, the run's error says more, and res.Version is left.
func versionAfter(ctx context.Context, p *goose.Provider, runErr error, res *Result) error {
	if runErr != nil && isConnectionError(runErr) {
		return nil
	}
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), versionQueryTimeout)
	defer cancel()
	current, _, err := p.GetVersions(vctx)
	switch {
	case err == nil:
		res.Version = current
	case runErr == nil:
		return fmt.Errorf("read version: %w", err)
	}
	return nil
}

// runError is the error of a goose run (up or down) that failed with err:
// the tenant lock's timeout, the error of a check under the lock (nothing
// was run), an *ApplyError naming the migration that failed (partial), or
// err.
func (m *Migrator) runError(direction string, err error, partial *goose.PartialError) error {
	var checkErr *lockedCheckError
	switch {
	case errors.Is(err, ErrLockTimeout):
		return fmt.Errorf("%w (waited %s)", ErrLockTimeout, m.lockWait)
	case errors.As(err, &checkErr):
		// A check under the lock (invalid indexes, a missing Down): nothing
		// was run.
		return checkErr.err
	case partial != nil:
		f := partial.Failed.Source
		name := "go migration"
		if f.Path != "" {
			name = path.Base(f.Path)
		}
		// partial.Err, not partial: its message would repeat the version.
		return &ApplyError{Version: f.Version, Name: name, Err: partial.Err}
	default:
		return fmt.Errorf("goose %s: %w", direction, err)
	}
}

// openTarget opens a pool on target t for one run (openDB), first creating the schema of a schema
// target when createSchema (and marking its version table as the schema tenant's, see
// ensureSchema), and returns it with the log attributes that name the target: never the URL,
// which may hold a password. The caller closes db.
func (m *Migrator) openTarget(ctx context.Context, t Target, createSchema bool) (db *sql.DB, target slog.Attr, err error) {
	connCfg, err := m.connConfig(t)
	if err != nil {
		return nil, slog.Attr{}, err
	}
	target = slog.Group("target", slog.String("database", connCfg.Database), slog.String("schema", t.Schema))
	db = m.openDB(connCfg)
	if createSchema && t.Schema != "" {
		name := goose.DefaultTablename
		if m.format == FormatGolangMigrate {
			name = GolangMigrateTable
		}
		// The table is a schema tenant's in one database: the same schema name in another
		// database (or reached as another role) is another table.
		where := fmt.Sprintf("%s\x00%d\x00%s\x00%s", connCfg.Host, connCfg.Port, connCfg.Database, connCfg.User)
		if err := m.ensureSchema(ctx, db, schemaVersionTable(t.Schema, m.versionTable, name), where, target); err != nil {
			_ = db.Close()
			return nil, slog.Attr{}, err
		}
	}
	return db, target, nil
}

// openSession is openTarget and one session on its pool, for a run whose advisory locks are the
// session's. closeAll closes the session, then the pool.
func (m *Migrator) openSession(ctx context.Context, t Target, createSchema bool) (conn *sql.Conn, target slog.Attr, closeAll func(), err error) {
	db, target, err := m.openTarget(ctx, t, createSchema)
	if err != nil {
		return nil, slog.Attr{}, nil, err
	}
	if conn, err = db.Conn(ctx); err != nil {
		_ = db.Close()
		return nil, slog.Attr{}, nil, fmt.Errorf("connect: %w", err)
	}
	return conn, target, func() {
		_ = conn.Close()
		_ = db.Close()
	}, nil
}

// openDB returns a database/sql pool over pgx, limited to the connections goose needs. The pool
// opens connections lazily and the caller closes it at the end of the run.
func (m *Migrator) openDB(connCfg *pgx.ConnConfig) *sql.DB {
	db := stdlib.OpenDB(*connCfg)
	db.SetMaxOpenConns(m.maxConns)
	db.SetMaxIdleConns(m.maxConns)
	return db
}

// newProvider returns a goose provider for one run on db, with its version table at table.
// afterLock runs under the tenant lock, before anything is applied (see newTenantLocker).
func (m *Migrator) newProvider(db *sql.DB, schema string, table VersionTable, afterLock func(context.Context, *sql.Conn) error) (*goose.Provider, error) {
	locker, err := m.newTenantLocker(schema, afterLock)
	if err != nil {
		return nil, err
	}
	store, err := newTableStore(table, schema)
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectCustom, db, m.fsys,
		goose.WithStore(store),
		goose.WithSessionLocker(locker),
		goose.WithGoMigrations(m.goMigrations...),
		goose.WithDisableGlobalRegistry(true),
		goose.WithAllowOutofOrder(m.allowMissing),
	)
	if err != nil {
		return nil, fmt.Errorf("create goose provider: %w", err)
	}
	return p, nil
}

// up runs upFn (goose's UpTo, or upTenant) and, while it fails on a catalog conflict (see isCatalogConflict), runs it
// again, for up to conflictRetryWindow, after short random waits. It returns the migrations
// applied by all the runs and the error of the last one.
//
// Tenants migrating at the same moment collide on rows of PostgreSQL's shared catalogs when
// their migrations touch cluster-wide objects (ALTER ROLE ... SET, CREATE ROLE): the failed
// transaction rolled back and nothing but a new attempt can help. Retrying here, at once,
// spares the request that waits for an on_request migration a 500, and a queued tenant a
// FAILED status and the queue's backoff. A NO TRANSACTION migration that fails this way is
// re-run from its first statement, as a retry by the queue would.
func (m *Migrator) up(ctx context.Context, upFn func(context.Context) ([]*goose.MigrationResult, error), target slog.Attr) ([]*goose.MigrationResult, error) {
	var (
		applied       []*goose.MigrationResult
		firstConflict time.Time
		backoff       = conflictBackoff
	)
	for retry := 1; ; retry++ {
		results, err := upFn(ctx)
		var partial *goose.PartialError
		if errors.As(err, &partial) {
			results = partial.Applied
		}
		applied = append(applied, results...)
		if err == nil || !isCatalogConflict(err) {
			return applied, err
		}
		if firstConflict.IsZero() {
			firstConflict = time.Now()
		}
		wait := rand.N(backoff)
		if time.Since(firstConflict)+wait > conflictRetryWindow {
			return applied, err
		}
		m.logger.DebugContext(ctx, "migration collided with a concurrent catalog update; retrying",
			target, slog.Int("retry", retry), slog.String("err", err.Error()))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return applied, err
		case <-timer.C:
		}
		backoff = min(2*backoff, conflictMaxBackoff)
	}
}
