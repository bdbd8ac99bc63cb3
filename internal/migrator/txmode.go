package migrator

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"runtime/debug"
	"slices"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
)

// This file applies a goose source in TransactionModeTenant: a tenant's consecutive pending
// transactional SQL migrations run in one transaction, with their version rows.
//
//   - The statements are goose's own: New has goose parse every file once (parseStatements),
//     exactly as goose would when applying it, and keeps the statements it would execute
//     and whether it would use a transaction. A group sends them, each its own query, in a
//     pipeline, without waiting for each answer (pipeline.go).
//   - The version rows are written with goose's store's statement (database.Store.Insert), in
//     the group's transaction, one per file, in version order: the version table holds exactly the rows
//     goose writes in file mode, with consecutive ids. Only their tstamp differs: now() is the
//     transaction's start time, so the rows of one group share it.
//   - A group ends before a "-- +goose NO TRANSACTION" file and before a Go migration; those run
//     alone, as goose runs them (a Go migration may have effects outside the database, so it is
//     never run twice by the rerun below). A group of one file is file mode.
//   - A statement that fails with SQLSTATE 55P04 (unsafe use of a new enum value: the value was
//     added by ALTER TYPE ... ADD VALUE earlier in the same transaction) is not a real failure:
//     the group is rolled back and run again split before the file that failed, so the files
//     before it commit as one group and a new group starts with it. The same failure on the
//     first file of a group happens in file mode too, and fails the run.
//   - A collision with another tenant on a shared catalog row (isCatalogConflict: many tenants
//     running ALTER ROLE ... SET on one role) is transient: the files before the failing one
//     commit as one group, and Migrate retries from it after a short wait, as it retries the
//     file in file mode. Without the split every collision would run the whole group again.
//     The Migrator also remembers the file (sharedCatalog): from then on it runs in a
//     transaction of its own, in every tenant's run, as in file mode. In a group it would hold
//     the shared row until the group's last file commits, and every other tenant's run would
//     queue behind it on that row, one tenant at a time.
//   - Any other failure rolls the whole group back: the tenant stays at the version before the
//     group, and the *goose.PartialError (Migrate's *ApplyError) names the file whose statement
//     failed, with Applied holding the migrations committed before the group. A failed COMMIT
//     (a deferred constraint, say) is reported on the group's last file. A tenant whose session
//     is killed, or whose context is canceled, mid-group also ends at the version before it.
//   - Locking, the invalid-index repair under the lock, the pinned version table, lock_timeout
//     and statement_timeout (per statement, as in file mode) are those of file mode.
//
// A group holds every lock its statements take until it commits: an ALTER TABLE in its first
// file blocks the tenant's queries on that table until the last file is done. BENCHMARKS.md
// measures it.
//
// golang-migrate sources keep their per-file behaviour in both modes (see golangmigrate.go): a
// file there is one multi-statement query that may hold its own BEGIN/COMMIT, which a
// surrounding transaction would break.

// TransactionMode says how many transactions a run applies a tenant's migrations in.
type TransactionMode string

const (
	// TransactionModeFile applies each migration in its own transaction, as goose does (a NO
	// TRANSACTION file in none). It is the default.
	TransactionModeFile TransactionMode = "file"
	// TransactionModeTenant applies a tenant's consecutive pending transactional SQL migrations in
	// one transaction, with their version rows: fewer commits, and a tenant is never left
	// between two of them. See txmode.go. golang-migrate sources ignore it.
	TransactionModeTenant TransactionMode = "tenant"
)

// ParseTransactionMode parses a Config.TransactionMode value: "", "file" or "tenant"; "" is
// TransactionModeFile.
func ParseTransactionMode(s string) (TransactionMode, error) {
	switch TransactionMode(s) {
	case "", TransactionModeFile:
		return TransactionModeFile, nil
	case TransactionModeTenant:
		return TransactionModeTenant, nil
	}
	return "", fmt.Errorf("invalid transaction mode %q: want file or tenant", s)
}

// sqlUnsafeNewEnumValue is SQLSTATE 55P04, unsafe_new_enum_value_usage.
const sqlUnsafeNewEnumValue = "55P04"

// parsedSQL is one SQL migration as goose would apply it up.
type parsedSQL struct {
	useTx      bool     // goose runs it in a transaction (no "-- +goose NO TRANSACTION")
	statements []string // the Up statements, as goose executes them
}

// parseStatements has goose parse each SQL file of fsys, one provider per file, and records
// what goose would execute: the statements and whether they run in a transaction. goose has no
// public parser; "applying" a file with versioning disabled to a connection that records
// instead of running is its parser, exactly.
func parseStatements(fsys fs.FS) (map[string]parsedSQL, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	out := make(map[string]parsedSQL, len(entries))
	for _, e := range entries {
		name := e.Name()
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		rec := &recording{}
		db := sql.OpenDB(recordingConnector{rec: rec})
		p, err := goose.NewProvider(goose.DialectPostgres, db, fstest.MapFS{name: {Data: data}},
			goose.WithDisableVersioning(true),
			goose.WithDisableGlobalRegistry(true),
		)
		if err == nil {
			_, err = p.Up(context.Background())
		}
		_ = db.Close()
		if err != nil {
			return nil, fmt.Errorf("invalid migration: %w", err)
		}
		out[name] = parsedSQL{useTx: rec.began, statements: rec.statements}
	}
	return out, nil
}

// recording is what goose did on a recordingConnector's connection.
type recording struct {
	began      bool
	statements []string
	args       [][]any // each statement's arguments
}

// recordingConnector is a database/sql connector whose one connection records the statements
// executed and whether a transaction began, and runs nothing. Only parseStatements uses it.
type recordingConnector struct{ rec *recording }

func (c recordingConnector) Connect(context.Context) (driver.Conn, error) {
	return recordingConn(c), nil
}
func (recordingConnector) Driver() driver.Driver { return dryRunDriver{} }

type recordingConn struct{ rec *recording }

func (recordingConn) Prepare(string) (driver.Stmt, error) { return nil, errDryRun }
func (recordingConn) Close() error                        { return nil }
func (c recordingConn) Begin() (driver.Tx, error)         { c.rec.began = true; return dryRunTx{}, nil }

func (c recordingConn) BeginTx(context.Context, driver.TxOptions) (driver.Tx, error) {
	return c.Begin()
}

func (c recordingConn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	c.rec.statements = append(c.rec.statements, query)
	values := make([]any, len(args))
	for i, a := range args {
		values[i] = a.Value
	}
	c.rec.args = append(c.rec.args, values)
	return driver.RowsAffected(0), nil
}

// step is one unit of a tenant-mode run: a group of transactional SQL migrations (one or
// more), or one migration that runs alone (NO TRANSACTION, or Go).
type step struct {
	migrations []*goose.Source
	tx         bool // transactional SQL: runGroup
	joinable   bool // may share a transaction with its transactional neighbours
}

// upTenant is goose's UpTo(upTo) in TransactionModeTenant; it returns what goose's UpTo
// returns (the results, or a *goose.PartialError), so Migrate reads both modes alike. schema,
// table and afterLock are those of newProvider; p is the run's provider over db.
func (m *Migrator) upTenant(ctx context.Context, p *goose.Provider, db *sql.DB, schema string, table VersionTable,
	afterLock func(context.Context, *sql.Conn) error, target slog.Attr, upTo int64,
) (_ []*goose.MigrationResult, retErr error) {
	// As goose's UpTo: without the lock first, so the common no-op costs none. goose's HasPending
	// also creates the version table (with its version 0 row) when there is none.
	if pending, err := p.HasPending(ctx); err != nil || !pending {
		return nil, err
	}

	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("failed to initialize: %w", err)
	}
	defer func() {
		if err := conn.Close(); err != nil && retErr == nil && !errors.Is(err, sql.ErrConnDone) {
			retErr = err
		}
	}()
	locker, err := m.newTenantLocker(schema, afterLock)
	if err != nil {
		return nil, err
	}
	if err := locker.SessionLock(ctx, conn); err != nil {
		return nil, fmt.Errorf("failed to initialize: %w", err)
	}
	defer func() {
		if err := locker.SessionUnlock(ctx, conn); err != nil && retErr == nil {
			retErr = err
		}
	}()

	store, err := newTableStore(table, schema)
	if err != nil {
		return nil, err
	}
	// Under the lock, as goose: the versions applied now, and what is left to apply.
	rows, err := store.ListMigrations(ctx, conn)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, errors.New("missing zero version migration")
	}
	applied := make([]int64, len(rows))
	for i, r := range rows {
		applied[i] = r.Version
	}
	_, pending, err := upVersions(m.versions, applied, m.allowMissing)
	if err != nil {
		return nil, err
	}
	// goose's UpTo: the versions up to upTo, out-of-order ones included, in the same order.
	pending = slices.DeleteFunc(pending, func(v int64) bool { return v > upTo })

	steps, err := m.plan(p, pending)
	if err != nil {
		return nil, err
	}
	simple, err := simpleProtocol(conn)
	if err != nil {
		return nil, err
	}
	r := tenantRun{m: m, db: db, conn: conn, store: store, target: target, simpleProtocol: simple}
	for _, st := range steps {
		if st.tx {
			err = r.runGroup(ctx, st.migrations)
		} else {
			err = r.runAlone(ctx, st.migrations[0])
		}
		if err != nil {
			return nil, err
		}
	}
	return r.results, nil
}

// plan cuts the pending versions, in the order goose applies them, into steps: runs of
// consecutive transactional SQL migrations, and the migrations that run alone.
func (m *Migrator) plan(p *goose.Provider, pending []int64) ([]step, error) {
	sources := make(map[int64]*goose.Source)
	for _, s := range p.ListSources() {
		sources[s.Version] = s
	}
	var steps []step
	for _, v := range pending {
		s := sources[v]
		if s == nil {
			return nil, fmt.Errorf("no migration %d in the source", v)
		}
		parsed, ok := m.parsed[path.Base(s.Path)]
		if s.Type == goose.TypeSQL && !ok {
			return nil, fmt.Errorf("migration %d (%s) was not parsed", v, path.Base(s.Path))
		}
		tx := s.Type == goose.TypeSQL && parsed.useTx
		_, shared := m.sharedCatalog.Load(v)
		joinable := tx && !shared
		if n := len(steps); joinable && n > 0 && steps[n-1].joinable {
			steps[n-1].migrations = append(steps[n-1].migrations, s)
			continue
		}
		steps = append(steps, step{migrations: []*goose.Source{s}, tx: tx, joinable: joinable})
	}
	return steps, nil
}

// tenantRun is the state of one upTenant run under the tenant's lock.
type tenantRun struct {
	m       *Migrator
	db      *sql.DB   // the run's pool, for Go migrations without a transaction
	conn    *sql.Conn // the locked session
	store   database.Store
	target  slog.Attr
	results []*goose.MigrationResult // committed so far, in order
	// simpleProtocol: the URL chose the simple protocol, so no group is pipelined (pipeline.go).
	simpleProtocol bool
}

// runGroup applies transactional SQL migrations in one transaction with their version rows.
// When a migration fails in a way that running it after the files before it have committed
// can fix, the group is split before it (see the file comment): on SQLSTATE 55P04 the files
// before it commit as one group and a new group starts with it; on a catalog conflict (see
// isCatalogConflict) the files before it commit and the conflict is returned, for up to retry
// from the failing file as file mode would, without running the whole group again.
func (r *tenantRun) runGroup(ctx context.Context, group []*goose.Source) error {
	for len(group) > 0 {
		done, inPipeline, err := r.tryGroup(ctx, group)
		if err == nil {
			return nil
		}
		// Whether this attempt sent the file in a pipeline, not whether the Migrator would now:
		// another tenant's run may have marked it stepwise while this one's pipeline was in flight.
		if f := group[done]; isSyntaxError(err.Err) && inPipeline {
			// Perhaps a statement of several commands, which only the simple protocol takes:
			// from now on the file runs statement by statement, as goose runs it (pipeline.go).
			r.m.stepwise.Store(f.Version, struct{}{})
			r.m.logger.DebugContext(ctx, "migration statement refused in a pipeline; running the group again with the file statement by statement",
				r.target, slog.Int64("version", f.Version), slog.String("source", path.Base(f.Path)), slog.String("err", err.Err.Error()))
			continue
		}
		var pgErr *pgconn.PgError
		enumValue := errors.As(err.Err, &pgErr) && pgErr.Code == sqlUnsafeNewEnumValue
		conflict := !enumValue && isCatalogConflict(err.Err)
		if conflict && len(group) > 1 {
			// From now on this file runs in a transaction of its own, for every tenant: a group
			// would hold the shared row until its last file commits, and the other tenants'
			// runs would queue behind it and collide.
			r.m.sharedCatalog.Store(group[done].Version, struct{}{})
		}
		if done == 0 || (!enumValue && !conflict) {
			return err
		}
		r.m.logger.DebugContext(ctx, "migration failed in a way the files before it committed can fix; splitting the group before it",
			r.target, slog.Int64("version", group[done].Version), slog.String("source", path.Base(group[done].Path)),
			slog.String("err", err.Err.Error()))
		if err := r.runGroup(ctx, group[:done]); err != nil {
			return err
		}
		if !enumValue {
			return &goose.PartialError{Applied: r.results, Failed: err.Failed, Err: err.Err}
		}
		group = group[done:]
	}
	return nil
}

// tryGroup runs group in one transaction: its files in pipelines (pipeline.go), a file that
// may not be pipelined statement by statement. On success it appends the results; on failure it
// returns how many of its migrations ran before the failing one, whether that one was sent in a
// pipeline, and the *goose.PartialError to report (the transaction is rolled back and nothing of
// the group is recorded).
func (r *tenantRun) tryGroup(ctx context.Context, group []*goose.Source) (int, bool, *goose.PartialError) {
	var (
		results    []*goose.MigrationResult
		i          int
		start      = time.Now()
		inPipeline bool
	)
	fail := func(err error) (int, bool, *goose.PartialError) {
		res := newResult(group[i])
		res.Error = err
		res.Duration = time.Since(start)
		return i, inPipeline, &goose.PartialError{Applied: r.results, Failed: res, Err: err}
	}
	tx, err := r.conn.BeginTx(ctx, nil)
	if err != nil {
		return fail(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	for i < len(group) {
		start = time.Now()
		inPipeline = false
		if !r.pipelined(group[i]) {
			res, err := r.execFile(ctx, tx, group[i])
			if err != nil {
				return fail(err)
			}
			results = append(results, res)
			i++
			continue
		}
		n := 1
		for i+n < len(group) && r.pipelined(group[i+n]) {
			n++
		}
		inPipeline = true
		res, done, err := r.pipeline(ctx, group[i:i+n])
		results = append(results, res...)
		for _, d := range res {
			start = start.Add(d.Duration) // on failure, the failing file's own time
		}
		i += done
		if err != nil {
			return fail(err)
		}
	}
	start = time.Now()
	inPipeline = false
	if err := tx.Commit(); err != nil {
		// Which file a deferred check belongs to is unknown: report the last one.
		i = len(group) - 1
		return fail(fmt.Errorf("commit migrations %d to %d in one transaction: %w", group[0].Version, group[i].Version, err))
	}
	results[len(results)-1].Duration += time.Since(start)
	r.results = append(r.results, results...)
	return 0, false, nil
}

// runAlone applies one migration the way goose's runIndividually does: a NO TRANSACTION SQL
// file statement by statement on the locked session, a Go migration in a transaction of its
// own or, without one, on the pool.
func (r *tenantRun) runAlone(ctx context.Context, s *goose.Source) error {
	start := time.Now()
	res := newResult(s)
	var err error
	if s.Type == goose.TypeSQL {
		// A NO TRANSACTION file, on the locked session; transactional ones are groups.
		res.Empty = len(r.m.parsed[path.Base(s.Path)].statements) == 0
		var done *goose.MigrationResult
		if done, err = r.execFile(ctx, r.conn, s); err == nil {
			res = done
		}
	} else {
		res.Empty, err = r.runGo(ctx, r.m.goMigration(s.Version))
	}
	res.Duration = time.Since(start)
	if err != nil {
		res.Error = err
		return &goose.PartialError{Applied: r.results, Failed: res, Err: err}
	}
	r.results = append(r.results, res)
	return nil
}

// runGo applies Go migration g with its version row and reports whether it had no function,
// as goose does: UpFnContext in a transaction, UpFnNoTxContext on the pool, neither in a
// transaction that only records the version. A panic is an error, as in goose.
func (r *tenantRun) runGo(ctx context.Context, g *goose.Migration) (empty bool, retErr error) {
	defer func() {
		if p := recover(); p != nil {
			retErr = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	insert := database.InsertRequest{Version: g.Version}
	if g.UpFnNoTxContext != nil && g.UpFnContext == nil {
		if err := g.UpFnNoTxContext(ctx, r.db); err != nil {
			return false, err
		}
		return false, r.store.Insert(ctx, r.db, insert)
	}
	tx, err := r.conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if g.UpFnContext != nil {
		if err := g.UpFnContext(ctx, tx); err != nil {
			return false, err
		}
	}
	if err := r.store.Insert(ctx, tx, insert); err != nil {
		return false, err
	}
	return g.UpFnContext == nil, tx.Commit()
}

// goMigration returns the Go migration with version v; the source has it.
func (m *Migrator) goMigration(v int64) *goose.Migration {
	for _, g := range m.goMigrations {
		if g.Version == v {
			return g
		}
	}
	panic(fmt.Sprintf("migrator: no go migration %d", v)) // plan only lists source versions
}

// newResult returns goose's result of applying s up, before its outcome is known.
func newResult(s *goose.Source) *goose.MigrationResult {
	return &goose.MigrationResult{
		Source:    &goose.Source{Type: s.Type, Path: s.Path, Version: s.Version},
		Direction: "up",
	}
}
