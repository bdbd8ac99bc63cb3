package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

const testKey = "test-encryption-key-0123456789"

// result is what one in-process run of the command printed.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// runCLI runs the command line in-process.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// requireCode fails the test unless r exited with code.
func requireCode(t *testing.T, code int, r result) {
	t.Helper()
	require.Equal(t, code, r.code, "%s", r)
}

// fleet is a control plane of the test's own.
type fleet struct {
	t   *testing.T
	url string
	// migrations is the --migrations that run adds when the command line
	// has none: a copy of the example set, versions 1-4. Empty: none.
	migrations string
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	return &fleet{t: t, url: pgtest.NewDatabase(t), migrations: exampleDir(t, 4)}
}

// run runs the command line against the fleet's control plane with its key
// and, unless args name them, the fleet's migrations.
func (f *fleet) run(args ...string) result {
	f.t.Helper()
	args = append(args, "--database-url", f.url, "--encryption-key", testKey)
	if f.migrations != "" && !slices.Contains(args, "--migrations") {
		args = append(args, "--migrations", f.migrations)
	}
	return runCLI(f.t, args...)
}

// add registers a tenant through the CLI.
func (f *fleet) add(id, dbURL string, extra ...string) {
	f.t.Helper()
	r := f.run(append([]string{"tenants", "add", id, dbURL}, extra...)...)
	requireCode(f.t, 0, r)
}

// orch opens an Orchestrator on the fleet's control plane, to check what the
// CLI recorded.
func (f *fleet) orch() *tenantmigrate.Orchestrator {
	f.t.Helper()
	o, err := tenantmigrate.New(f.t.Context(), tenantmigrate.Config{DatabaseURL: f.url, EncryptionKey: testKey, ReadOnly: true})
	require.NoError(f.t, err)
	f.t.Cleanup(o.Close)
	return o
}

// tenants returns every tenant of the control plane.
func (f *fleet) tenants() []tenantmigrate.Tenant {
	f.t.Helper()
	tenants, next, err := f.orch().ListTenants(f.t.Context(), 0, 10_000)
	require.NoError(f.t, err)
	require.Zero(f.t, next)
	return tenants
}

// exec runs sql on the database at url.
func execSQL(t *testing.T, url, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	_, err = conn.Exec(t.Context(), sql, args...)
	require.NoError(t, err)
}

// queryBool runs a query returning one boolean.
func queryBool(t *testing.T, url, sql string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	var b bool
	require.NoError(t, conn.QueryRow(t.Context(), sql).Scan(&b))
	return b
}

// controlPlaneSnapshot returns, per table of the control plane's schema
// (River's included), a digest of its rows: two snapshots are equal exactly
// when nothing was inserted, updated or deleted in between.
func controlPlaneSnapshot(t *testing.T, url string) map[string]string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	rows, err := conn.Query(t.Context(), `SELECT tablename FROM pg_tables WHERE schemaname = 'tenantmigrate' ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, tables)
	snap := make(map[string]string, len(tables))
	for _, table := range tables {
		var digest string
		require.NoError(t, conn.QueryRow(t.Context(), `SELECT count(*) || ':' || coalesce(md5(string_agg(r::text, ',' ORDER BY r::text)), '')
			FROM tenantmigrate.`+pgx.Identifier{table}.Sanitize()+` r`).Scan(&digest))
		snap[table] = digest
	}
	return snap
}

// writeMigrations writes goose SQL files (name -> Up statement) into a new
// directory.
func writeMigrations(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, up := range files {
		body := "-- +goose Up\n" + up + "\n"
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
	return dir
}

// syncBuffer is a bytes.Buffer safe for concurrent use (the name the tests
// of this package use).
type syncBuffer = fleettest.SyncBuffer
