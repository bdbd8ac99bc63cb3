package migrator

import (
	"fmt"
	"strings"
	"testing"

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
