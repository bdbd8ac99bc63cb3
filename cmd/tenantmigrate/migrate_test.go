package main

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// addSchemaTenants registers n schema-per-tenant tenants in one new
// database, named prefix-01, ... (schemas prefix_01, ...).
func addSchemaTenants(f *fleet, prefix string, n int) []string {
	f.t.Helper()
	db := pgtest.NewDatabase(f.t)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i+1)
		f.add(ids[i], db, "--schema", strings.ReplaceAll(ids[i], "-", "_"))
	}
	return ids
}

// requireStates checks the control plane's version and status of each id.
func requireStates(t *testing.T, f *fleet, ids []string, version int64, status tenantmigrate.Status) {
	t.Helper()
	o := f.orch()
	for _, id := range ids {
		st, err := o.TenantState(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, status, st.MigrationsStatus, "tenant %s: %s", id, st.LastError)
		require.NotNil(t, st.MigrationsVersion, "tenant %s", id)
		require.Equal(t, version, *st.MigrationsVersion, "tenant %s", id)
	}
}

func TestMigrateAll(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ids := addSchemaTenants(f, "s", 8)
	for _, id := range []string{"db-1", "db-2"} {
		f.add(id, pgtest.NewDatabase(t))
		ids = append(ids, id)
	}

	r := f.run("migrate", "--all", "--concurrency", "3", "--progress", "plain", "--progress-interval", "10ms")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "migrating 10 tenants to version 4, 3 at a time")
	require.Regexp(t, `migrated 10 tenants to version 4 in \S+ \([\d.]+ tenants/s\): 10 completed, 0 failed`, r.stdout)
	// Plain progress lines on stderr (not a terminal), with every figure.
	require.Regexp(t, `(?m)^progress: \d+/10 done, \d+ failed, [\d.]+ tenants/s, elapsed \S+, ETA \S+$`, r.stderr)
	requireStates(t, f, ids, 4, tenantmigrate.StatusCompleted)

	// The tenants' databases hold the migrated schema.
	for _, tn := range f.tenants() {
		table := "users"
		if tn.Schema != "" {
			table = tn.Schema + ".users"
		}
		require.True(t, queryBool(t, tn.DatabaseURL, fmt.Sprintf("SELECT to_regclass('%s') IS NOT NULL", table)), tn.ID)
	}

	// Once more: nothing to do.
	r = f.run("migrate", "--all")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "nothing to do: all 10 tenants at version 4")
}

func TestMigrateFailing(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ids := addSchemaTenants(f, "bad", 2)
	good := writeMigrations(t, map[string]string{"00001_one.sql": "CREATE TABLE one (id int);"})
	bad := writeMigrations(t, map[string]string{
		"00001_one.sql": "CREATE TABLE one (id int);",
		"00002_two.sql": "CREATE TABLE two (id int REFERENCES no_such_table);",
	})
	requireCode(t, 0, f.run("migrate", "--tenant", ids[0], "--migrations", good, "--progress", "none"))

	// One wave that never halts: this test is about reporting failures
	// (TestMigrateRolloutHaltsAndResumes is about halting).
	r := f.run("migrate", "--all", "--migrations", bad, "--progress", "none", "--waves", "100%", "--halt-failure-rate", "100%")
	requireCode(t, 1, r)
	require.Contains(t, r.stdout, "0 completed, 2 failed")
	for _, id := range ids {
		require.Regexp(t, `(?m)^  `+regexp.QuoteMeta(id)+`: .*no_such_table`, r.stdout)
	}
	require.Contains(t, r.stderr, "2 of 2 tenants failed")
	// Not retried: a SQL error is permanent.
	require.NotContains(t, r.stdout, "retry")
	// A tenant of a rollout that failed its last attempt is FAILED_STALE.
	requireStates(t, f, ids, 1, tenantmigrate.StatusFailedStale)
	require.Contains(t, f.tenants()[0].LastError, "no_such_table")

	// FAILED tenants are selected by --all; FAILED_STALE ones only with
	// --include-stale or by name.
	execSQL(t, f.url, `UPDATE tenantmigrate.tenants SET migrations_status = 'FAILED_STALE'`)
	r = f.run("migrate", "--all", "--migrations", bad)
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "nothing to do: 0 of 2 tenants at version 2; the 2 behind are FAILED_STALE")

	good2 := writeMigrations(t, map[string]string{
		"00001_one.sql": "CREATE TABLE one (id int);",
		"00002_two.sql": "CREATE TABLE two (id int);",
	})
	r = f.run("migrate", "--tenant", ids[0], "--migrations", good2, "--progress", "none")
	requireCode(t, 0, r)
	requireStates(t, f, ids[:1], 2, tenantmigrate.StatusCompleted)
	requireStates(t, f, ids[1:], 1, tenantmigrate.StatusFailedStale)

	r = f.run("migrate", "--all", "--include-stale", "--migrations", good2, "--progress", "none")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "1 completed, 0 failed")
	requireStates(t, f, ids, 2, tenantmigrate.StatusCompleted)
}

func TestMigrateDryRun(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	dbURL := pgtest.NewDatabase(t)
	f.add("db-tenant", dbURL)
	schemaDB := pgtest.NewDatabase(t)
	f.add("schema-tenant", schemaDB, "--schema", "tenant_schema")
	before := f.tenants()
	snapshot := controlPlaneSnapshot(t, f.url)

	r := f.run("migrate", "--all", "--dry-run")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^TENANT\s+CURRENT\s+PENDING$`, r.stdout)
	require.Regexp(t, `(?m)^db-tenant\s+0\s+1, 2, 3, 4$`, r.stdout)
	require.Regexp(t, `(?m)^schema-tenant\s+0\s+1, 2, 3, 4$`, r.stdout)
	require.Contains(t, r.stdout, "dry run: 2 tenants would be migrated to version 4; nothing was changed")

	// Nothing was written: not the control plane (no table of it, rollouts,
	// runs, instances and River's jobs included), not the tenants.
	require.Equal(t, before, f.tenants())
	require.Equal(t, snapshot, controlPlaneSnapshot(t, f.url))
	require.False(t, queryBool(t, dbURL, "SELECT to_regclass('goose_db_version') IS NOT NULL"))
	require.False(t, queryBool(t, schemaDB, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'tenant_schema')"))

	// After a partial migration, the dry run shows what is left.
	partial := writeMigrations(t, map[string]string{"00001_create_users.sql": "CREATE TABLE users (id int);"})
	requireCode(t, 0, f.run("migrate", "--tenant", "db-tenant", "--migrations", partial, "--progress", "none"))
	r = f.run("migrate", "--tenant", "db-tenant", "--dry-run", "--allow-changed-migrations")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^db-tenant\s+1\s+2, 3, 4$`, r.stdout)
	require.NotContains(t, r.stdout, "schema-tenant")
}

func TestMigrateNothingToDo(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("migrate", "--all")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "nothing to do: all 0 tenants at version 4")
	r = f.run("migrate", "--all", "--dry-run")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "nothing to do")
}

func TestMigrateUnknownTenant(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("migrate", "--tenant", "nobody")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "no tenant nobody")
}

// TestMigrateUnreachableTenant: a tenant whose database server does not
// answer fails once --server-down-timeout is over, naming the server,
// without its password in the output, and nothing is recorded for it (its
// server's failure, not the tenant's).
func TestMigrateUnreachableTenant(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	u, err := url.Parse(pgtest.NewDatabase(t))
	require.NoError(t, err)
	u.User = url.UserPassword("nobody", "tenantPw0rd")
	u.Host = "127.0.0.1:1"
	f.add("gone", u.String())

	r := f.run("migrate", "--all", "--retries", "1", "--retry-backoff", "1ms", "--progress", "none", "--server-down-timeout", "2s")
	requireCode(t, 1, r)
	require.Contains(t, r.stdout, "0 completed, 1 failed")
	require.Regexp(t, `(?m)^  gone: .*database server 127\.0\.0\.1:1 .*connect`, r.stdout)
	require.NotContains(t, r.stdout+r.stderr, "tenantPw0rd")
	st, err := f.orch().TenantState(t.Context(), "gone")
	require.NoError(t, err)
	require.Empty(t, st.MigrationsStatus)
}

func TestMigrateUsageErrors(t *testing.T) {
	t.Parallel()
	const db = "postgres://u@127.0.0.1:1/cp"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"NoSelection", []string{"migrate"}, "--all, or --tenant"},
		{"ConcurrencyZero", []string{"migrate", "--all", "--concurrency", "0"}, "--concurrency"},
		{"NegativeRetries", []string{"migrate", "--all", "--retries", "-1"}, "--retries"},
		{"BadLogLevel", []string{"migrate", "--all", "--log-level", "loud"}, "--log-level"},
		{"BadProgress", []string{"migrate", "--all", "--progress", "fancy"}, "--progress"},
		{"StaleWithoutAll", []string{"migrate", "--tenant", "a", "--include-stale"}, "--include-stale"},
		{"BadTenantID", []string{"migrate", "--tenant", "Not Valid"}, "invalid tenant id"},
		{"UnknownFlag", []string{"migrate", "--everything"}, "unknown flag"},
		{"BadInt", []string{"migrate", "--all", "--concurrency", "many"}, "invalid argument"},
		{"StrayArg", []string{"migrate", "--all", "extra"}, "unknown command"},
		{"NoDatabaseURL", []string{"migrate", "--all", "--database-url", "", "--encryption-key", testKey}, "DATABASE_URL"},
		{"NoKey", []string{"migrate", "--all", "--database-url", db, "--encryption-key", ""}, "ENCRYPTION_KEY"},
		{"ShortKey", []string{"migrate", "--all", "--database-url", db, "--encryption-key", "short"}, "at least 16"},
		{"BadTransactionMode", []string{"migrate", "--all", "--database-url", db, "--encryption-key", testKey, "--transaction-mode", "database"}, "--transaction-mode (TRANSACTION_MODE)"},
		{"NoMigrationsDir", []string{"migrate", "--all", "--database-url", db, "--encryption-key", testKey, "--migrations", "/no/such/dir"}, "--migrations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, tc.args...)
			requireCode(t, 2, r)
			require.Contains(t, r.stderr, tc.want)
		})
	}
}

// TestMigrateEnv: the flags read their environment variables, and a flag
// beats its variable. Not parallel: t.Setenv.
func TestMigrateEnv(t *testing.T) {
	f := newFleet(t)
	addSchemaTenants(f, "env", 2)
	t.Setenv("DATABASE_URL", f.url)
	t.Setenv("ENCRYPTION_KEY", testKey)
	t.Setenv("MIGRATIONS_DIR", f.migrations)
	t.Setenv("MIGRATE_ALL", "true")
	t.Setenv("PROGRESS", "none")

	t.Setenv("MIGRATE_CONCURRENCY", "0")
	r := runCLI(t, "migrate")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "--concurrency must be at least 1")

	t.Setenv("MIGRATE_CONCURRENCY", "lots")
	r = runCLI(t, "migrate")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "$MIGRATE_CONCURRENCY")

	t.Setenv("MIGRATE_CONCURRENCY", "2")
	t.Setenv("MIGRATE_DRY_RUN", "true")
	r = runCLI(t, "migrate")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "dry run: 2 tenants would be migrated")

	r = runCLI(t, "migrate", "--dry-run=false", "--concurrency", "1")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "2 tenants to version 4, 1 at a time")

	t.Setenv("MIGRATE_DRY_RUN", "")
	t.Setenv("MIGRATE_ALL", "")
	t.Setenv("MIGRATE_TENANTS", "env-01,env-02")
	r = runCLI(t, "migrate")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "migrated 2 tenants to version 4")

	t.Setenv("DATABASE_URL", "")
	r = runCLI(t, "status")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "DATABASE_URL")
}

// TestMigrateTransactionModeTenant: with --transaction-mode tenant (or
// TRANSACTION_MODE), a tenant's transactional migrations are recorded by one
// transaction; the example set's NO TRANSACTION 00003 goes alone.
func TestMigrateTransactionModeTenant(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	fileURL, tenantURL := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	f.add("by-file", fileURL)
	f.add("by-tenant", tenantURL)
	// xmin: the transaction that wrote each version row.
	const txCount = "SELECT count(DISTINCT xmin::text) = $1 FROM goose_db_version WHERE version_id > 0"

	r := f.run("migrate", "--tenant", "by-file", "--progress", "none", "--transaction-mode", "file")
	requireCode(t, 0, r)
	require.True(t, queryBool(t, fileURL, strings.Replace(txCount, "$1", "4", 1)))

	r = f.run("migrate", "--tenant", "by-tenant", "--progress", "none", "--transaction-mode", "tenant")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "to version 4")
	// 00001-00002 in one transaction, 00003 (NO TRANSACTION) alone, then 00004.
	require.True(t, queryBool(t, tenantURL, strings.Replace(txCount, "$1", "3", 1)))
}
