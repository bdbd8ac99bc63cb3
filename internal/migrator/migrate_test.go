package migrator

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
)

// exampleUpTo returns the example migrations with versions up to and including maxVersion.
func exampleUpTo(t testing.TB, maxVersion int64) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	entries, err := fs.ReadDir(examplemigrations.FS, ".")
	require.NoError(t, err)
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		require.NoError(t, err)
		if v > maxVersion {
			continue
		}
		data, err := fs.ReadFile(examplemigrations.FS, e.Name())
		require.NoError(t, err)
		out[e.Name()] = &fstest.MapFile{Data: data}
	}
	return out
}

func TestMigrateFreshDatabaseThenNoop(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: examplemigrations.FS})
	require.Equal(t, []int64{1, 2, 3, 4}, m.Versions())
	require.Equal(t, int64(4), m.Latest())

	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3, 4}, res.Applied)
	require.Equal(t, int64(4), res.Version)
	require.Positive(t, res.Duration)

	conn := connect(t, dbURL)
	require.True(t, tableExists(t, conn, "public", "users"))
	require.True(t, tableExists(t, conn, "public", "notes"))
	require.Equal(t, []int64{0, 1, 2, 3, 4}, appliedVersions(t, conn, "public"))
	// 00003 ran outside a transaction (CREATE INDEX CONCURRENTLY refuses to run inside one) and
	// built a valid index.
	require.True(t, queryBool(t, conn, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.notes_user_id_idx'::regclass`))
	// 00004's PL/pgSQL function works.
	var userID, count int64
	require.NoError(t, conn.QueryRow(ctx, `INSERT INTO users (email) VALUES ('a@example.com') RETURNING id`).Scan(&userID))
	exec(t, conn, `INSERT INTO notes (user_id, body) VALUES ($1, 'one'), ($1, 'two')`, userID)
	require.NoError(t, conn.QueryRow(ctx, `SELECT user_note_count($1)`, userID).Scan(&count))
	require.Equal(t, int64(2), count)

	// A second run has nothing to do and changes nothing.
	res, err = m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	require.Equal(t, int64(4), res.Version)
	require.Equal(t, []int64{0, 1, 2, 3, 4}, appliedVersions(t, conn, "public"))
}

func TestMigrateNoTransactionMigration(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_commit_in_do.sql": `-- +goose NO TRANSACTION
-- +goose Up
-- +goose StatementBegin
DO $$
BEGIN
    CREATE TABLE committed_first (id int);
    COMMIT;
    CREATE TABLE committed_second (id int);
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE committed_second;
DROP TABLE committed_first;
`,
		"00002_concurrent_index.sql": `-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY committed_first_id_idx ON committed_first (id);
`,
	})})

	res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, res.Applied)

	conn := connect(t, dbURL)
	require.True(t, tableExists(t, conn, "public", "committed_first"))
	require.True(t, tableExists(t, conn, "public", "committed_second"))
	require.True(t, queryBool(t, conn, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'committed_first_id_idx'::regclass`))
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "public"))
}

func TestMigrateFailingMigrationKeepsLastGoodVersion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_t1.sql": "-- +goose Up\nCREATE TABLE t1 (id int);\n",
		"00002_t2.sql": "-- +goose Up\nCREATE TABLE t2 (id int);\n",
		// The first statement succeeds, the second is a syntax error: the transaction must roll
		// both back.
		"00003_broken.sql": "-- +goose Up\nCREATE TABLE t3 (id int);\nCREATE TABLE t3_broken (id int,);\n",
		"00004_t4.sql":     "-- +goose Up\nCREATE TABLE t4 (id int);\n",
	})})

	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.Error(t, err)
	require.Equal(t, []int64{1, 2}, res.Applied)
	require.Equal(t, int64(2), res.Version)
	require.Contains(t, err.Error(), "apply migration 3 (00003_broken.sql)")
	var applyErr *ApplyError
	require.ErrorAs(t, err, &applyErr)
	require.Equal(t, int64(3), applyErr.Version)
	require.Equal(t, "00003_broken.sql", applyErr.Name)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "42601", pgErr.Code)
	require.False(t, IsRetryable(err))

	conn := connect(t, dbURL)
	require.True(t, tableExists(t, conn, "public", "t1"))
	require.True(t, tableExists(t, conn, "public", "t2"))
	require.False(t, tableExists(t, conn, "public", "t3"), "v3 must not be half-applied")
	require.False(t, tableExists(t, conn, "public", "t4"))
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "public"))

	// Again: nothing applied this time, and the version still comes from the database.
	res, err = m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.ErrorContains(t, err, "apply migration 3 (00003_broken.sql)")
	require.Empty(t, res.Applied)
	require.Equal(t, int64(2), res.Version)
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "public"))
}

func TestMigrateSchemaPerTenantInParallel(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: examplemigrations.FS})

	const tenants = 20
	schemas := make([]string, tenants)
	results := make([]Result, tenants)
	var g errgroup.Group
	for i := range tenants {
		schemas[i] = fmt.Sprintf("tenant_%02d", i)
		g.Go(func() error {
			var err error
			results[i], err = m.Migrate(ctx, Target{DatabaseURL: dbURL, Schema: schemas[i]})
			return err
		})
	}
	require.NoError(t, g.Wait())

	conn := connect(t, dbURL)
	for i, schema := range schemas {
		require.Equal(t, []int64{1, 2, 3, 4}, results[i].Applied, schema)
		require.Equal(t, int64(4), results[i].Version, schema)
		require.True(t, tableExists(t, conn, schema, "users"), schema)
		require.True(t, tableExists(t, conn, schema, "notes"), schema)
		require.Equal(t, []int64{0, 1, 2, 3, 4}, appliedVersions(t, conn, schema), schema)
		require.True(t, queryBool(t, conn, `SELECT i.indisvalid FROM pg_index i
			JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = 'notes_user_id_idx'`, schema), schema)
		require.True(t, queryBool(t, conn, `SELECT EXISTS (SELECT 1 FROM pg_proc p
			JOIN pg_namespace n ON n.oid = p.pronamespace
			WHERE n.nspname = $1 AND p.proname = 'user_note_count')`, schema), schema)
	}
	// Nothing leaked into the shared schema.
	require.False(t, tableExists(t, conn, "public", "users"))
	require.False(t, tableExists(t, conn, "public", "goose_db_version"))

	// The function is pinned to its tenant's schema.
	exec(t, conn, `INSERT INTO tenant_03.users (email) VALUES ('x@example.com')`)
	exec(t, conn, `INSERT INTO tenant_03.notes (user_id, body) SELECT id, 'n' FROM tenant_03.users`)
	var n3, n4 int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT tenant_03.user_note_count(id) FROM tenant_03.users`).Scan(&n3))
	require.NoError(t, conn.QueryRow(ctx, `SELECT tenant_04.user_note_count(id) FROM tenant_03.users`).Scan(&n4))
	require.Equal(t, int64(1), n3)
	require.Equal(t, int64(0), n4)

	// A second pass over all tenants is a no-op.
	for _, schema := range schemas {
		res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL, Schema: schema})
		require.NoError(t, err)
		require.Empty(t, res.Applied)
		require.Equal(t, int64(4), res.Version)
	}
}

// sessionInfoFS records the migration session's settings in a table named session_info, created
// unqualified (so in the first schema of search_path).
var sessionInfoFS = sqlFS(map[string]string{
	"00001_session_info.sql": `-- +goose Up
CREATE TABLE session_info AS SELECT
    current_setting('application_name')  AS application_name,
    current_schema()                      AS schema_name,
    current_setting('lock_timeout')       AS lock_timeout,
    current_setting('statement_timeout')  AS statement_timeout;
`,
})

type sessionInfo struct {
	ApplicationName, CurrentSchema, LockTimeout, StatementTimeout string
}

func readSessionInfo(t testing.TB, dbURL, schema string) sessionInfo {
	t.Helper()
	conn := connect(t, dbURL)
	var s sessionInfo
	require.NoError(t, conn.QueryRow(t.Context(),
		`SELECT application_name, schema_name, lock_timeout, statement_timeout FROM `+schema+`.session_info`,
	).Scan(&s.ApplicationName, &s.CurrentSchema, &s.LockTimeout, &s.StatementTimeout))
	return s
}

func TestMigrateSessionParameters(t *testing.T) {
	t.Parallel()

	t.Run("Defaults", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		m := newMigrator(t, Config{FS: sessionInfoFS})
		_, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
		require.NoError(t, err)
		require.Equal(t, sessionInfo{
			ApplicationName:  "tenantmigrate",
			CurrentSchema:    "public",
			LockTimeout:      "5s",
			StatementTimeout: "0",
		}, readSessionInfo(t, dbURL, "public"))
	})

	t.Run("URLParametersReachTheSession", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		exec(t, connect(t, dbURL), `CREATE SCHEMA app`)
		m := newMigrator(t, Config{FS: sessionInfoFS, StatementTimeout: 2 * time.Second})
		tenantURL := withQuery(t, dbURL, map[string]string{
			"search_path":      "app",
			"application_name": "tm_url_test",
			"lock_timeout":     "1500ms",
		})

		res, err := m.Migrate(t.Context(), Target{DatabaseURL: tenantURL})
		require.NoError(t, err)
		require.Equal(t, []int64{1}, res.Applied)
		require.Equal(t, sessionInfo{
			ApplicationName:  "tm_url_test",
			CurrentSchema:    "app",
			LockTimeout:      "1500ms",
			StatementTimeout: "2s",
		}, readSessionInfo(t, dbURL, "app"))

		// The migrations follow search_path; the version table of a new tenant is pinned to
		// public, whatever search_path says (see resolveVersionTable).
		conn := connect(t, dbURL)
		require.True(t, tableExists(t, conn, "public", "goose_db_version"))
		require.False(t, tableExists(t, conn, "app", "goose_db_version"))
		require.False(t, tableExists(t, conn, "public", "session_info"))

		current, pending, err := m.Pending(t.Context(), Target{DatabaseURL: tenantURL})
		require.NoError(t, err)
		require.Equal(t, int64(1), current)
		require.Empty(t, pending)
	})

	t.Run("SchemaOverridesURLSearchPath", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		m := newMigrator(t, Config{FS: sessionInfoFS, TenantLockTimeout: -1})
		tenantURL := withQuery(t, dbURL, map[string]string{"search_path": "public"})

		_, err := m.Migrate(t.Context(), Target{DatabaseURL: tenantURL, Schema: "acme"})
		require.NoError(t, err)
		require.Equal(t, sessionInfo{
			ApplicationName:  "tenantmigrate",
			CurrentSchema:    "acme",
			LockTimeout:      "0",
			StatementTimeout: "0",
		}, readSessionInfo(t, dbURL, "acme"))
		require.False(t, tableExists(t, connect(t, dbURL), "public", "session_info"))
	})
}

func TestMigrateAdoptsGooseManagedDatabase(t *testing.T) {
	t.Parallel()

	// gooseUp migrates dbURL with plain goose (no migrator), as an existing fleet would have been.
	gooseUp := func(t *testing.T, dbURL string, fsys fs.FS) {
		t.Helper()
		db, err := sql.Open("pgx", dbURL) // driver registered by pgx/v5/stdlib
		require.NoError(t, err)
		defer db.Close()
		p, err := goose.NewProvider(goose.DialectPostgres, db, fsys)
		require.NoError(t, err)
		_, err = p.Up(t.Context())
		require.NoError(t, err)
	}

	t.Run("Database", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		gooseUp(t, dbURL, exampleUpTo(t, 2))

		m := newMigrator(t, Config{FS: examplemigrations.FS})
		current, pending, err := m.Pending(t.Context(), Target{DatabaseURL: dbURL})
		require.NoError(t, err)
		require.Equal(t, int64(2), current)
		require.Equal(t, []int64{3, 4}, pending)

		res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
		require.NoError(t, err)
		require.Equal(t, []int64{3, 4}, res.Applied)
		require.Equal(t, int64(4), res.Version)
		require.Equal(t, []int64{0, 1, 2, 3, 4}, appliedVersions(t, connect(t, dbURL), "public"))
	})

	t.Run("Schema", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		exec(t, connect(t, dbURL), `CREATE SCHEMA acme`)
		gooseUp(t, withQuery(t, dbURL, map[string]string{"search_path": "acme"}), exampleUpTo(t, 2))

		m := newMigrator(t, Config{FS: examplemigrations.FS})
		res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: "acme"})
		require.NoError(t, err)
		require.Equal(t, []int64{3, 4}, res.Applied)
		require.Equal(t, int64(4), res.Version)
		conn := connect(t, dbURL)
		require.Equal(t, []int64{0, 1, 2, 3, 4}, appliedVersions(t, conn, "acme"))
		require.False(t, tableExists(t, conn, "public", "goose_db_version"))
	})
}

func TestMigrateSchemaCreatedConcurrently(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: examplemigrations.FS})
	appName := "tm_race_" + randomSuffix(t)

	// Another session creates the schema and keeps its transaction open: the migrator does not
	// see the schema yet, its CREATE SCHEMA IF NOT EXISTS blocks on pg_namespace's unique index
	// and fails with a unique violation once the other session commits.
	other := connect(t, dbURL)
	tx, err := other.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `CREATE SCHEMA acme`)
	require.NoError(t, err)

	done := make(chan error, 1)
	var res Result
	go func() {
		var err error
		res, err = m.Migrate(ctx, Target{
			DatabaseURL: withQuery(t, dbURL, map[string]string{"application_name": appName}),
			Schema:      "acme",
		})
		done <- err
	}()

	observer := connect(t, dbURL)
	waitFor(t, 10*time.Second, "CREATE SCHEMA to block", func() bool {
		return queryBool(t, observer, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock')`, appName)
	})
	require.NoError(t, tx.Commit(ctx))

	require.NoError(t, <-done)
	require.Equal(t, []int64{1, 2, 3, 4}, res.Applied)
	require.True(t, tableExists(t, observer, "acme", "users"))
}

func TestMigrateGoMigrations(t *testing.T) {
	t.Parallel()
	txMigration := goose.NewGoMigration(1,
		&goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `CREATE TABLE go_tx (id int)`)
			return err
		}},
		nil,
	)
	noTxMigration := goose.NewGoMigration(2,
		&goose.GoFunc{RunDB: func(ctx context.Context, db *sql.DB) error {
			_, err := db.ExecContext(ctx, `CREATE TABLE go_no_tx (id int)`)
			return err
		}},
		nil,
	)

	for _, schema := range []string{"", "acme"} {
		t.Run("Schema="+schema, func(t *testing.T) {
			t.Parallel()
			dbURL := newTestDB(t)
			m := newMigrator(t, Config{
				FS:           sqlFS(map[string]string{"00003_sql.sql": "-- +goose Up\nCREATE TABLE from_sql (id int);\n"}),
				GoMigrations: []*goose.Migration{txMigration, noTxMigration},
			})
			require.Equal(t, []int64{1, 2, 3}, m.Versions())

			res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: schema})
			require.NoError(t, err)
			require.Equal(t, []int64{1, 2, 3}, res.Applied)

			want := schema
			if want == "" {
				want = "public"
			}
			conn := connect(t, dbURL)
			for _, table := range []string{"go_tx", "go_no_tx", "from_sql"} {
				require.True(t, tableExists(t, conn, want, table), table)
			}
			require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, conn, want))
		})
	}
}

func TestMigrateOutOfOrderIsRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	files := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n",
	}
	_, err := newMigrator(t, Config{FS: sqlFS(files)}).Migrate(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)

	files["00002_b.sql"] = "-- +goose Up\nCREATE TABLE b (id int);\n"
	m := newMigrator(t, Config{FS: sqlFS(files)})

	_, _, err = m.Pending(ctx, Target{DatabaseURL: dbURL})
	require.ErrorContains(t, err, "misses lower versions 2")
	require.False(t, IsRetryable(err))

	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.ErrorContains(t, err, "missing (out-of-order)")
	require.False(t, IsRetryable(err))
	require.Equal(t, int64(3), res.Version)
	require.False(t, tableExists(t, connect(t, dbURL), "public", "b"))
}

func TestMigrateErrorsNeverContainPassword(t *testing.T) {
	t.Parallel()
	const password = "S3cret-Passw0rd"
	m := newMigrator(t, Config{FS: examplemigrations.FS})

	for name, target := range map[string]Target{
		"Unreachable":       {DatabaseURL: "postgres://tm_user:" + password + "@127.0.0.1:1/tenant?connect_timeout=5"},
		"UnreachableSchema": {DatabaseURL: "postgres://tm_user:" + password + "@127.0.0.1:1/tenant", Schema: "acme"},
		"BadPort":           {DatabaseURL: "postgres://tm_user:" + password + "@127.0.0.1:notaport/tenant"},
		"BadEscape":         {DatabaseURL: "postgres://tm_user:" + password + "%zz@127.0.0.1/tenant"},
		"BadSSLMode":        {DatabaseURL: "postgres://tm_user:" + password + "@127.0.0.1/tenant?sslmode=bogus"},
		"QueryPassword":     {DatabaseURL: "postgres://127.0.0.1:1/tenant?user=tm_user&password=" + password},
		"KeywordValue":      {DatabaseURL: "host=127.0.0.1 port=1 user=tm_user password=" + password + " dbname=tenant"},
		"KeywordValueBad":   {DatabaseURL: "host=127.0.0.1 port=nope user=tm_user password='" + password + "' dbname=tenant"},
		// A space after '=' and an error elsewhere: pgx's own masking shows the password.
		"KeywordValueSpaceAfterEquals":  {DatabaseURL: "host=127.0.0.1 port=x password= " + password + " user=tm_user"},
		"KeywordValueSpacesAroundEqual": {DatabaseURL: "host=127.0.0.1 port=x password = " + password + " user=tm_user"},
		"KeywordValueEscapedQuote":      {DatabaseURL: `host=127.0.0.1 port=x password='it\'s ` + password + `' user=tm_user`},
		"KeywordValueUnquotedSpace":     {DatabaseURL: "host=127.0.0.1 port=1 password=it " + password + " user=tm_user"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			res, err := m.Migrate(t.Context(), target)
			require.Error(t, err)
			require.NotContains(t, err.Error(), password)
			require.Equal(t, int64(-1), res.Version)

			_, _, err = m.Pending(t.Context(), target)
			require.Error(t, err)
			require.NotContains(t, err.Error(), password)
		})
	}
}

func TestMigrateConcurrentRunsApplyOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	appName := "tm_lock_" + randomSuffix(t)
	tenantURL := withQuery(t, dbURL, map[string]string{"application_name": appName})

	holder := connect(t, dbURL)
	exec(t, holder, `CREATE TABLE gate (id int)`)
	m := newMigrator(t, Config{
		FS: sqlFS(map[string]string{
			"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
			// Blocks while the test holds the gate, with the tenant lock held by the run.
			"00002_gate.sql": "-- +goose Up\nSELECT count(*) FROM gate;\n",
			"00003_b.sql":    "-- +goose Up\nCREATE TABLE b (id int);\n",
		}),
		TenantLockTimeout: -1, // wait for the gate as long as it takes
	})

	tx, err := holder.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE gate IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	var wg sync.WaitGroup
	results := make([]Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			results[i], errs[i] = m.Migrate(ctx, Target{DatabaseURL: tenantURL})
		})
	}

	// One run holds the tenant lock and is stuck on the gate; the other has found migrations
	// pending and polls for the tenant lock (its session's last query is pg_try_advisory_lock).
	observer := connect(t, dbURL)
	waitFor(t, 10*time.Second, "one run blocked on the gate and the other polling the tenant lock", func() bool {
		return queryBool(t, observer, `SELECT coalesce(
				bool_or(wait_event_type = 'Lock' AND query LIKE '%FROM gate%')
				AND bool_or(wait_event_type IS DISTINCT FROM 'Lock' AND query LIKE '%pg_try_advisory_lock%'),
				false)
			FROM pg_stat_activity WHERE application_name = $1`, appName)
	})
	require.NoError(t, tx.Commit(ctx))
	wg.Wait()

	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.ElementsMatch(t, [][]int64{{1, 2, 3}, nil}, [][]int64{results[0].Applied, results[1].Applied})
	require.Equal(t, int64(3), results[0].Version)
	require.Equal(t, int64(3), results[1].Version)
	require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, observer, "public"))
}

func TestMigrateLockTimeout(t *testing.T) {
	t.Parallel()

	// holdLock takes the advisory lock a run on schema would need and keeps it until the test ends.
	holdLock := func(t *testing.T, dbURL, schema string) {
		t.Helper()
		exec(t, connect(t, dbURL), `SELECT pg_advisory_lock($1)`, lockKey(schema))
	}

	t.Run("Database", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		holdLock(t, dbURL, "")
		m := newMigrator(t, Config{FS: examplemigrations.FS, LockTimeout: time.Second})

		res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
		require.ErrorIs(t, err, ErrLockTimeout)
		require.True(t, IsRetryable(err))
		require.Empty(t, res.Applied)
		require.Equal(t, int64(0), res.Version)
		require.GreaterOrEqual(t, res.Duration, time.Second)
		require.False(t, tableExists(t, connect(t, dbURL), "public", "users"))
	})

	t.Run("SchemasDoNotBlockEachOther", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		holdLock(t, dbURL, "tenant_a")
		m := newMigrator(t, Config{FS: examplemigrations.FS, LockTimeout: time.Second})

		res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: "tenant_b"})
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2, 3, 4}, res.Applied)

		_, err = m.Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: "tenant_a"})
		require.ErrorIs(t, err, ErrLockTimeout)
		require.False(t, tableExists(t, connect(t, dbURL), "tenant_a", "users"))
	})

	t.Run("ContextEndsWhileWaiting", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		holdLock(t, dbURL, "")
		m := newMigrator(t, Config{FS: examplemigrations.FS}) // LockTimeout 1m

		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		_, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.NotErrorIs(t, err, ErrLockTimeout)
		require.False(t, IsRetryable(err))
	})
}

func TestMigrateInvalidTarget(t *testing.T) {
	t.Parallel()
	m := newMigrator(t, Config{FS: examplemigrations.FS})
	for name, target := range map[string]Target{
		"EmptyURL":      {},
		"BadSchema":     {DatabaseURL: "postgres://127.0.0.1:1/x", Schema: "Bad-Name"},
		"PublicSchema":  {DatabaseURL: "postgres://127.0.0.1:1/x", Schema: "public"},
		"ReservedPgPre": {DatabaseURL: "postgres://127.0.0.1:1/x", Schema: "pg_tenant"},
	} {
		_, err := m.Migrate(t.Context(), target)
		require.Error(t, err, name)
		require.False(t, IsRetryable(err), name)
		require.False(t, errors.Is(err, ErrLockTimeout), name)
	}
}

func TestMigrateLogsWithoutURL(t *testing.T) {
	t.Parallel()
	const password = "LogSecret-123" // the test server trusts local connections and ignores it
	dbURL := newTestDB(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.UserPassword(u.User.Username(), password)

	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := newMigrator(t, Config{FS: examplemigrations.FS, Logger: logger})

	_, err = m.Migrate(t.Context(), Target{DatabaseURL: u.String(), Schema: "acme"})
	require.NoError(t, err)

	mu.Lock()
	out := buf.String()
	mu.Unlock()
	require.Contains(t, out, `"msg":"tenant migrated"`)
	require.Contains(t, out, `"target":{"database":"`+strings.TrimPrefix(u.Path, "/")+`","schema":"acme"}`)
	require.Contains(t, out, `"version":4`)
	require.Contains(t, out, `"source":"00003_notes_user_id_index.sql"`)
	require.NotContains(t, out, password)
	require.NotContains(t, out, "postgres://")
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
