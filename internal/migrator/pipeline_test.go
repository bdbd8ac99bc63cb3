package migrator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// A StatementBegin block may hold several commands: goose sends it as one simple query, which the
// extended protocol of the pipeline refuses. Tenant mode runs that file statement by statement in
// the same group, and remembers it.
func TestTenantModeStatementOfSeveralCommands(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	files := map[string]string{
		"00001_a.sql":    "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_both.sql": "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE b (id int);\nINSERT INTO b VALUES (2);\n-- +goose StatementEnd\n",
		"00003_c.sql":    "-- +goose Up\nINSERT INTO a SELECT id + 1 FROM b;\n",
	}
	m := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant})
	for range 2 { // the second tenant's run knows the file from the first
		dbURL := newTestDB(t)
		res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2, 3}, res.Applied)
		conn := connect(t, dbURL)
		var n int
		require.NoError(t, conn.QueryRow(ctx, "SELECT id FROM a").Scan(&n))
		require.Equal(t, 3, n)
		require.Equal(t, [][]int64{{0}, {1, 2, 3}}, transactions(versionRows(t, conn, "public")))
		_, stepwise := m.stepwise.Load(int64(2))
		require.True(t, stepwise)
	}
	for _, v := range []int64{1, 3} {
		_, stepwise := m.stepwise.Load(v)
		require.False(t, stepwise, "version %d", v)
	}
}

// A real syntax error fails its file, as in file mode, after the file ran statement by statement.
func TestTenantModeSyntaxErrorFailsItsFile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	files := map[string]string{
		"00001_a.sql":   "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_bad.sql": "-- +goose Up\nCREATE TABLE b (id int);\nCREAT TABLE c (id int);\n",
		"00003_d.sql":   "-- +goose Up\nCREATE TABLE d (id int);\n",
	}
	m := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant})
	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
	var applyErr *ApplyError
	require.ErrorAs(t, err, &applyErr)
	require.Equal(t, int64(2), applyErr.Version)
	require.Equal(t, "00002_bad.sql", applyErr.Name)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "42601", pgErr.Code)
	require.Contains(t, pgErr.Message, `"CREAT"`)
	require.Empty(t, res.Applied)
	conn := connect(t, dbURL)
	require.Equal(t, []int64{0}, appliedVersions(t, conn, "public"))
	require.False(t, tableExists(t, conn, "public", "a"))
}

// A URL that chose the simple protocol (for a proxy without the extended one) gets no pipeline,
// and the same groups. Its statement of two commands runs at once: no pipeline refused it.
func TestTenantModeSimpleProtocolURL(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := withQuery(t, newTestDB(t), map[string]string{"default_query_exec_mode": "simple_protocol"})
	files := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int PRIMARY KEY);\n",
		"00002_b.sql": "-- +goose Up\n-- +goose StatementBegin\nINSERT INTO a VALUES (2);\nINSERT INTO a VALUES (3);\n-- +goose StatementEnd\n",
		"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int REFERENCES a);\n",
	}
	m := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant})
	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, res.Applied)
	conn := connect(t, dbURL)
	require.Equal(t, [][]int64{{0}, {1, 2, 3}}, transactions(versionRows(t, conn, "public")))
	_, stepwise := m.stepwise.Load(int64(2))
	require.False(t, stepwise, "no pipeline refused 00002")
}

// A group whose statements and answers both exceed the socket buffers many times over: the
// pipeline reads answers while it writes (pgconn's guard against the write/read deadlock).
func TestTenantModeLargePipeline(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	const nFiles = 40
	padding := "-- " + strings.Repeat("x", 64<<10) + "\n" // 64 kB into the server per statement
	files := map[string]string{"00001_t.sql": "-- +goose Up\nCREATE TABLE t (n int, s text);\n"}
	for i := 2; i <= nFiles; i++ {
		var b strings.Builder
		b.WriteString("-- +goose Up\n")
		for j := range 10 {
			// 64 kB back per statement.
			fmt.Fprintf(&b, "%sSELECT repeat('y', 65536) FROM (SELECT %d) s;\n", padding, j)
		}
		fmt.Fprintf(&b, "INSERT INTO t VALUES (%d, 'file');\n", i)
		files[fmt.Sprintf("%05d_f.sql", i)] = b.String()
	}
	res, err := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant}).Migrate(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Len(t, res.Applied, nFiles)
	conn := connect(t, dbURL)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n))
	require.Equal(t, nFiles-1, n)
	tx := transactions(versionRows(t, conn, "public"))
	require.Len(t, tx, 2)
	require.Len(t, tx[1], nFiles)
}

// A tenant whose pipeline was already sent when another tenant's run found the file of several
// commands (and marked it stepwise) still runs the file again statement by statement: the retry
// follows what this run sent, not what the Migrator would send now.
func TestTenantModeSeveralCommandsFoundMeanwhile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	const key = 0x7e57_0042
	files := map[string]string{
		"00001_wait.sql": fmt.Sprintf("-- +goose Up\nCREATE TABLE a (id int);\nSELECT pg_advisory_xact_lock(%d);\n", key),
		"00002_both.sql": "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE b (id int);\nINSERT INTO b VALUES (2);\n-- +goose StatementEnd\n",
	}
	m := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant})
	first, second := newTestDB(t), newTestDB(t)
	holder := connect(t, first)
	exec(t, holder, "SELECT pg_advisory_lock($1)", int64(key))

	done := make(chan error, 1)
	go func() {
		_, err := m.Migrate(ctx, Target{DatabaseURL: first})
		done <- err
	}()
	// The first tenant's pipeline, 00002 in it, is on the server, waiting in 00001.
	conn := connect(t, first)
	waitFor(t, 30*time.Second, "the first run to wait in 00001", func() bool {
		var n int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'`).Scan(&n))
		return n > 0
	})
	// Meanwhile the second tenant finds 00002 refused and marks it.
	_, err := m.Migrate(ctx, Target{DatabaseURL: second})
	require.NoError(t, err)
	_, stepwise := m.stepwise.Load(int64(2))
	require.True(t, stepwise)

	exec(t, holder, "SELECT pg_advisory_unlock($1)", int64(key))
	require.NoError(t, <-done, "the first tenant ran 00002 again statement by statement")
	require.Equal(t, [][]int64{{0}, {1, 2}}, transactions(versionRows(t, conn, "public")))
}

// A failure the server reports only at the pipeline's sync, after the last file's answers, is the
// last file's: here a file's own COMMIT leaves its deferred check to the sync.
func TestTenantModeFailureAtTheSync(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	files := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_deferred.sql": "-- +goose Up\nCREATE TABLE p (id int PRIMARY KEY);\n" +
			"CREATE TABLE c (id int REFERENCES p DEFERRABLE INITIALLY DEFERRED);\nCOMMIT;\nINSERT INTO c VALUES (1);\n",
	}
	_, err := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant}).Migrate(ctx, Target{DatabaseURL: dbURL})
	var applyErr *ApplyError
	require.ErrorAs(t, err, &applyErr)
	require.Equal(t, int64(2), applyErr.Version)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "23503", pgErr.Code) // foreign_key_violation
}
