package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestNoMigrationsIsAUsageError: serve, migrate (a dry run too) and verify
// without --migrations exit 2 saying how to set them, and touch no tenant;
// before, they applied the embedded example set to the fleet. A directory
// without migration files is refused the same way.
func TestNoMigrationsIsAUsageError(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	tenantURL := pgtest.NewDatabase(t)
	f.add("acme", tenantURL)
	f.migrations = ""
	empty := t.TempDir()

	for _, args := range [][]string{
		{"migrate", "--all", "--progress", "none"},
		{"migrate", "--tenant", "acme", "--progress", "none"},
		{"migrate", "--all", "--dry-run"},
		{"verify"},
		{"serve", "--listen", "127.0.0.1:0"},
	} {
		r := f.run(args...)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, "no migrations: set --migrations or MIGRATIONS_DIR", "%v", args)

		r = f.run(append(args, "--migrations", empty)...)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, "no migrations in --migrations "+empty, "%v", args)
	}
	require.False(t, queryBool(t, tenantURL, "SELECT to_regclass('goose_db_version') IS NOT NULL"), "a tenant was migrated")
	require.False(t, queryBool(t, tenantURL, "SELECT to_regclass('users') IS NOT NULL"), "the example set reached a tenant")
	st := f.tenants()[0]
	require.Nil(t, st.MigrationsVersion)
}

// TestEnvsubMigrationsNeedOptIn: migrate refuses a directory with an
// ENVSUB file (exit 2), naming it and the opt-in; --allow-envsub (or
// ALLOW_ENVSUB) runs it.
func TestEnvsubMigrationsNeedOptIn(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	tenantURL := pgtest.NewDatabase(t)
	f.add("acme", tenantURL)
	dir := writeMigrations(t, map[string]string{
		"00001_accounts.sql": "-- +goose ENVSUB ON\nCREATE TABLE ${ACCOUNTS_TABLE:-accounts} (id int);",
	})
	for _, args := range [][]string{
		{"migrate", "--all", "--progress", "none"},
		{"verify"},
		{"serve", "--listen", "127.0.0.1:0"},
	} {
		r := f.run(append(args, "--migrations", dir)...)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, "00001_accounts.sql: goose replaces ${VAR} in them from the environment of each process", "%v", args)
		require.Contains(t, r.stderr, "--allow-envsub (ALLOW_ENVSUB)", "%v", args)
		require.NotContains(t, r.stderr, "Config.AllowEnvsub", "%v", args)
	}
	require.False(t, queryBool(t, tenantURL, "SELECT to_regclass('goose_db_version') IS NOT NULL"))

	r := f.run("migrate", "--all", "--progress", "none", "--migrations", dir, "--allow-envsub", "--log-level", "warn")
	requireCode(t, 0, r)
	require.Contains(t, r.stderr, `"migrations":["00001_accounts.sql"]`)
	require.True(t, queryBool(t, tenantURL, "SELECT to_regclass('accounts') IS NOT NULL"))
}

// TestGolangMigrateDirectory: migrate recognises a golang-migrate directory
// and records the tenant's version in schema_migrations; a directory mixing
// both formats, and an unknown --migrations-format, are usage errors.
func TestGolangMigrateDirectory(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	tenantURL := pgtest.NewDatabase(t)
	f.add("acme", tenantURL)
	dir := writeMigrations(t, map[string]string{
		"1_accounts.up.sql":   "CREATE TABLE accounts (id int);",
		"1_accounts.down.sql": "DROP TABLE accounts;",
		"2_plans.up.sql":      "CREATE TABLE plans (id int);",
	})
	r := f.run("migrate", "--all", "--progress", "none", "--migrations", dir)
	requireCode(t, 0, r)
	require.True(t, queryBool(t, tenantURL, "SELECT version = 2 AND NOT dirty FROM schema_migrations"))
	require.False(t, queryBool(t, tenantURL, "SELECT to_regclass('goose_db_version') IS NOT NULL"))

	r = f.run("migrate", "--all", "--progress", "none", "--migrations", dir, "--migrations-format", "flyway")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "--migrations-format")

	mixed := writeMigrations(t, map[string]string{
		"1_accounts.up.sql": "CREATE TABLE accounts (id int);",
		"00002_plans.sql":   "-- +goose Up\nCREATE TABLE plans (id int);",
	})
	r = f.run("migrate", "--all", "--progress", "none", "--migrations", mixed)
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "mix goose and golang-migrate files")
}
