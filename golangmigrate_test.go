package tenantmigrate_test

import (
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/postgres" // golang-migrate's postgres driver
	_ "github.com/golang-migrate/migrate/v4/source/file"       // and its file source
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// gmRelease writes versions 1..n of a golang-migrate source (up and down files) into a new
// directory. bad4 makes version 4 fail.
func gmRelease(t *testing.T, n int, bad4 bool) string {
	t.Helper()
	ups := []string{
		"CREATE TABLE accounts (id bigint PRIMARY KEY);",
		"ALTER TABLE accounts ADD COLUMN name text;",
		"CREATE TABLE invoices (id bigint PRIMARY KEY, account_id bigint REFERENCES accounts (id));",
		"CREATE INDEX CONCURRENTLY invoices_account_idx ON invoices (account_id);",
		"CREATE TABLE plans (id int PRIMARY KEY);\nINSERT INTO plans VALUES (1);",
		"BEGIN;\nALTER TABLE invoices ADD COLUMN total bigint;\nCOMMIT;",
	}
	if bad4 {
		ups[3] = "SELECT * FROM no_such_table;"
	}
	dir := t.TempDir()
	for i := range n {
		base := filepath.Join(dir, []string{"1_accounts", "2_name", "3_invoices", "4_index", "5_plans", "6_total"}[i])
		require.NoError(t, os.WriteFile(base+".up.sql", []byte(ups[i]), 0o600))
		require.NoError(t, os.WriteFile(base+".down.sql", []byte("SELECT 1;"), 0o600))
	}
	return dir
}

// gmDatabaseURL is dbURL as golang-migrate's driver (lib/pq) takes it.
func gmDatabaseURL(t *testing.T, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// runGolangMigrate runs golang-migrate's Up on the tenant and returns its error.
func runGolangMigrate(t *testing.T, dir, dbURL string) error {
	t.Helper()
	gm, err := migrate.New("file://"+dir, gmDatabaseURL(t, dbURL))
	require.NoError(t, err)
	defer gm.Close()
	return gm.Up()
}

// golangMigrateVersion is golang-migrate's Version of the tenant.
func golangMigrateVersion(t *testing.T, dir, dbURL string) (uint, bool) {
	t.Helper()
	gm, err := migrate.New("file://"+dir, gmDatabaseURL(t, dbURL))
	require.NoError(t, err)
	defer gm.Close()
	v, dirty, err := gm.Version()
	require.NoError(t, err)
	return v, dirty
}

// TestGolangMigrateFleetAdopted: tenants golang-migrate took to 3 are taken to 6 by an
// Orchestrator that recognises the format by itself; golang-migrate then sees 6, clean, and has
// nothing to do. A tenant golang-migrate left dirty is not migrated, is recorded FAILED with the
// dirty error, and verify reports it.
func TestGolangMigrateFleetAdopted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	release3, release6 := gmRelease(t, 3, false), gmRelease(t, 6, false)

	tenants := map[string]string{"acme": pgtest.NewDatabase(t), "globex": pgtest.NewDatabase(t)}
	for _, dbURL := range tenants {
		require.NoError(t, runGolangMigrate(t, release3, dbURL))
	}
	dirtyURL := pgtest.NewDatabase(t)
	require.Error(t, runGolangMigrate(t, gmRelease(t, 4, true), dirtyURL))

	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: os.DirFS(release6)})
	for id, dbURL := range tenants {
		_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: id, DatabaseURL: dbURL})
		require.NoError(t, err)
	}
	_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "initech", DatabaseURL: dirtyURL})
	require.NoError(t, err)

	for id, dbURL := range tenants {
		current, pending, err := o.PendingVersions(ctx, id)
		require.NoError(t, err)
		require.Equal(t, int64(3), current)
		require.Equal(t, []int64{4, 5, 6}, pending)

		v, err := o.MigrateTenant(ctx, id)
		require.NoError(t, err, id)
		require.Equal(t, int64(6), v)
		st, err := o.TenantState(ctx, id)
		require.NoError(t, err)
		require.Equal(t, tenantmigrate.StatusCompleted, st.MigrationsStatus)

		gv, dirty := golangMigrateVersion(t, release6, dbURL)
		require.Equal(t, uint(6), gv, id)
		require.False(t, dirty, id)
		require.ErrorIs(t, runGolangMigrate(t, release6, dbURL), migrate.ErrNoChange, id)

		applied, err := o.AppliedVersions(ctx, id)
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2, 3, 4, 5, 6}, applied)
		vr := o.VerifyTenant(ctx, mustTenant(t, o, id))
		require.True(t, vr.OK(), "verify %s: %v", id, vr.Problems())
	}

	_, err = o.MigrateTenant(ctx, "initech")
	require.ErrorIs(t, err, tenantmigrate.ErrDirty)
	require.False(t, tenantmigrate.IsRetryable(err))
	st, err := o.TenantState(ctx, "initech")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus)
	require.Contains(t, st.LastError, "dirty at version 4: fix it, then `tenantmigrate force`")
	require.Contains(t, st.LastError, "`migrate force 4`")
	gv, dirty := golangMigrateVersion(t, release6, dirtyURL)
	require.Equal(t, uint(4), gv)
	require.True(t, dirty)
	conn, err := pgx.Connect(ctx, dirtyURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var plans bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('public.plans') IS NOT NULL`).Scan(&plans))
	require.False(t, plans, "nothing applied to the dirty tenant")

	vr := o.VerifyTenant(ctx, mustTenant(t, o, "initech"))
	require.False(t, vr.OK())
	require.True(t, vr.Dirty)
	require.Equal(t, int64(4), vr.DirtyVersion)
	require.Contains(t, vr.Problems(), "inconsistent: dirty at version 4: fix it, then `tenantmigrate force` "+
		"(or golang-migrate's `migrate force 4` once the migration is complete, `migrate force 3` with the previous version if it is undone); "+
		"a migration failed or was interrupted there and nothing is applied until the flag is cleared")
	o.Close()

	// Drift detection covers the up files: version 5, applied, edited afterwards.
	require.NoError(t, os.WriteFile(filepath.Join(release6, "5_plans.up.sql"), []byte("CREATE TABLE plans (id bigint PRIMARY KEY);"), 0o600))
	_, err = tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cp, EncryptionKey: bgKey, Migrations: os.DirFS(release6)})
	require.ErrorIs(t, err, tenantmigrate.ErrMigrationsChanged)
	require.ErrorContains(t, err, "5_plans.up.sql")
}

func TestGolangMigrateMixedSourceRefused(t *testing.T) {
	t.Parallel()
	dir := gmRelease(t, 2, false)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "00003_goose.sql"), []byte("-- +goose Up\nSELECT 1;\n"), 0o600))
	_, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), EncryptionKey: bgKey, Migrations: os.DirFS(dir)})
	require.ErrorIs(t, err, tenantmigrate.ErrMixedFormats)
	require.ErrorContains(t, err, "00003_goose.sql")

	_, err = tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: pgtest.NewDatabase(t), EncryptionKey: bgKey,
		Migrations: os.DirFS(dir), MigrationsFormat: "flyway"})
	require.ErrorIs(t, err, tenantmigrate.ErrInvalidConfig)
}
