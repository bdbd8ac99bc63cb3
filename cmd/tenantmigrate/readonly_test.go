package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// countChecksums returns the rows of the control plane's drift table.
func countChecksums(t *testing.T, cpURL string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), cpURL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT count(*) FROM tenantmigrate.migration_checksums`).Scan(&n))
	return n
}

// TestReadOnlyCommandsRecordNoChecksums: status, tenants add/list/get/rm,
// verify and migrate --dry-run, with or without the fleet's migrations,
// write nothing to the drift table; before, run without MIGRATIONS_DIR they
// recorded the embedded example set as applied, and the next migrate with
// the fleet's timestamp-versioned files refused to start
// ("00001_create_users.sql (missing)").
func TestReadOnlyCommandsRecordNoChecksums(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	tenantURL := pgtest.NewDatabase(t)
	f.add("acme", tenantURL)
	ts := writeMigrations(t, map[string]string{
		"20240101120000_accounts.sql": "CREATE TABLE accounts (id int);",
		"20240102120000_invoices.sql": "CREATE TABLE invoices (id int);",
	})
	requireCode(t, 0, f.run("migrate", "--all", "--migrations", ts, "--progress", "none"))
	// A control plane from before checksums were recorded, the case that
	// start-up backfills.
	execSQL(t, f.url, `TRUNCATE tenantmigrate.migration_checksums`)

	for _, args := range [][]string{
		{"status"},
		{"status", "--json"},
		{"tenants", "list"},
		{"tenants", "get", "acme"},
		{"tenants", "add", "globex", pgtest.NewDatabase(t)},
		{"tenants", "rm", "globex"},
		{"status", "--migrations", ts},
		{"tenants", "list", "--migrations", ts},
		{"verify", "--migrations", ts},
		{"migrate", "--all", "--dry-run", "--migrations", ts},
	} {
		requireCode(t, 0, f.run(args...))
		require.Zero(t, countChecksums(t, f.url), "%v wrote to the drift table", args)
	}

	// The next release starts, backfills from its own files and applies.
	require.NoError(t, os.WriteFile(filepath.Join(ts, "20240103120000_plans.sql"), []byte("-- +goose Up\nCREATE TABLE plans (id int);\n"), 0o644))
	r := f.run("migrate", "--all", "--migrations", ts, "--progress", "none")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "migrated 1 tenant to version 20240103120000")
	require.Equal(t, 3, countChecksums(t, f.url))
}
