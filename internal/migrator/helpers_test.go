package migrator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// serverURL returns a superuser URL of the test PostgreSQL server (TEST_DATABASE_URL if set).
func serverURL(t testing.TB) string {
	t.Helper()
	return pgtest.ServerURL(t)
}

// newTestDB creates a fresh database, dropped when the test ends, and returns its URL.
func newTestDB(t testing.TB) string {
	t.Helper()
	return pgtest.NewDatabase(t)
}

func randomSuffix(t testing.TB) string {
	t.Helper()
	b := make([]byte, 6)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// withQuery returns dbURL with the query parameters added.
func withQuery(t testing.TB, dbURL string, params map[string]string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// connect opens a plain connection to dbURL for inspecting or preparing a test database.
func connect(t testing.TB, dbURL string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dbURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func exec(t testing.TB, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	_, err := conn.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

func queryBool(t testing.TB, conn *pgx.Conn, sql string, args ...any) bool {
	t.Helper()
	var b bool
	require.NoError(t, conn.QueryRow(t.Context(), sql, args...).Scan(&b))
	return b
}

// tableExists reports whether schema.table exists.
func tableExists(t testing.TB, conn *pgx.Conn, schema, table string) bool {
	t.Helper()
	return queryBool(t, conn,
		`SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)`, schema, table)
}

// appliedVersions returns the versions in schema's goose_db_version in id order, including 0.
func appliedVersions(t testing.TB, conn *pgx.Conn, schema string) []int64 {
	t.Helper()
	rows, err := conn.Query(t.Context(),
		"SELECT version_id FROM "+pgx.Identifier{schema, "goose_db_version"}.Sanitize()+" ORDER BY id")
	require.NoError(t, err)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return versions
}

// sqlFS builds a migration source from file name => contents.
func sqlFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return fsys
}

// newMigrator returns a Migrator for cfg or fails the test.
func newMigrator(t testing.TB, cfg Config) *Migrator {
	t.Helper()
	m, err := New(cfg)
	require.NoError(t, err)
	return m
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("test context done waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
