package tenantmigrate_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgserver"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// Provisioning tests run on the shared test server, which is also the
// provision server. Each test has a migration source of its own (a last
// migration with a random literal), so its own template, and names its tenant
// databases with a prefix of its own; both are dropped at cleanup.

// uniqueSource returns fsys with one more migration on top, unique to this
// call: a source, and so a template, no other test shares.
func uniqueSource(t *testing.T, fsys fs.FS) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	names, err := fs.Glob(fsys, "*.sql")
	require.NoError(t, err)
	for _, n := range names {
		b, err := fs.ReadFile(fsys, n)
		require.NoError(t, err)
		out[n] = &fstest.MapFile{Data: b}
	}
	out[fmt.Sprintf("%05d_unique.sql", len(names)+1)] = &fstest.MapFile{
		Data: []byte("-- +goose Up\nSELECT '" + randomHex(6) + "';\n"),
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// provisionFixture is an Orchestrator with provisioning on the test server.
type provisionFixture struct {
	t         *testing.T
	serverURL string
	cpURL     string
	prefix    string // of every database name of this test's tenants
	logs      *logBuffer
	templates []string // of every Orchestrator opened
	o         *tenantmigrate.Orchestrator
}

func newProvisionFixture(t *testing.T, migrations fs.FS) *provisionFixture {
	t.Helper()
	f := &provisionFixture{
		t:         t,
		serverURL: pgtest.ServerURL(t),
		cpURL:     fleettest.NewControlPlane(t, ""),
		prefix:    "p" + randomHex(4),
		logs:      &logBuffer{},
	}
	t.Cleanup(f.dropDatabases)
	f.o = f.open(migrations)
	return f
}

// open builds another Orchestrator on the fixture's control plane and
// provision server (a release with other migrations, say).
func (f *provisionFixture) open(migrations fs.FS) *tenantmigrate.Orchestrator {
	o := newOrchestrator(f.t, tenantmigrate.Config{
		DatabaseURL: f.cpURL,
		Migrations:  migrations,
		Logger:      f.logs.logger(),
		Provision: tenantmigrate.ProvisionConfig{
			URL:          f.serverURL,
			NameTemplate: f.prefix + "_{id}",
		},
	})
	f.templates = append(f.templates, tenantmigrate.ProvisionTemplateName(o))
	return o
}

// dropDatabases drops the test's tenant databases and templates.
func (f *provisionFixture) dropDatabases() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.serverURL)
	if err != nil {
		f.t.Errorf("cleanup: %v", err)
		return
	}
	defer conn.Close(ctx)
	for _, name := range append(f.databases(ctx, conn, f.prefix+"_%"), f.templates...) {
		for _, sql := range []string{"ALTER DATABASE %s WITH IS_TEMPLATE false", "DROP DATABASE IF EXISTS %s WITH (FORCE)"} {
			if _, err := conn.Exec(ctx, fmt.Sprintf(sql, pgx.Identifier{name}.Sanitize())); err != nil && !strings.Contains(err.Error(), "does not exist") {
				f.t.Errorf("cleanup %s: %v", name, err)
			}
		}
	}
}

func (f *provisionFixture) databases(ctx context.Context, conn *pgx.Conn, like string) []string {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1`, like)
	require.NoError(f.t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(f.t, err)
	return names
}

// serverDatabases lists the databases of the provision server named like.
func (f *provisionFixture) serverDatabases(like string) []string {
	conn, err := pgx.Connect(f.t.Context(), f.serverURL)
	require.NoError(f.t, err)
	defer conn.Close(context.Background())
	return f.databases(f.t.Context(), conn, like)
}

func (f *provisionFixture) exec(url, sql string, args ...any) {
	f.t.Helper()
	conn, err := pgx.Connect(f.t.Context(), url)
	require.NoError(f.t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(f.t.Context(), sql, args...)
	require.NoError(f.t, err)
}

// templatesBuilt counts the "provisioning template built" log records.
func (f *provisionFixture) templatesBuilt() int {
	return strings.Count(f.logs.String(), `"msg":"provisioning template built"`)
}

// pgDumpSchema returns pg_dump --schema-only of url, normalised: without
// comments, blank lines and the random \restrict key of newer pg_dumps.
func pgDumpSchema(t *testing.T, url string) string {
	t.Helper()
	dir, err := pgserver.FindBinDir()
	require.NoError(t, err)
	// The bin directory may hold links to the server programs only (initdb
	// on PATH): pg_dump sits beside the real postgres.
	postgres, err := filepath.EvalSymlinks(filepath.Join(dir, "postgres"))
	require.NoError(t, err)
	out, err := exec.CommandContext(t.Context(), filepath.Join(filepath.Dir(postgres), "pg_dump"), "--schema-only", "--no-owner", "--dbname", url).Output()
	require.NoError(t, err)
	var b strings.Builder
	for line := range strings.SplitSeq(string(out), "\n") {
		if line == "" || strings.HasPrefix(line, "--") || strings.HasPrefix(line, `\restrict`) || strings.HasPrefix(line, `\unrestrict`) {
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// versionRows are the goose version table's (version_id, is_applied) rows.
func versionRows(t *testing.T, url string) []string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	rows, err := conn.Query(t.Context(), `SELECT version_id || ':' || is_applied FROM public.goose_db_version ORDER BY id`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return got
}

// TestProvisionedSchemaEqualsMigrated provisions a tenant from the bench's
// 45-migration set and migrates another from an empty database: pg_dump
// sees the same schema, the version table holds the same rows, and the
// provisioned tenant is COMPLETED at the latest version with nothing
// pending.
func TestProvisionedSchemaEqualsMigrated(t *testing.T) {
	t.Parallel()
	src := uniqueSource(t, os.DirFS("bench/migrations"))
	f := newProvisionFixture(t, src)
	ctx := t.Context()

	prov, err := f.o.ProvisionTenant(ctx, "prov")
	require.NoError(t, err)
	require.Equal(t, f.o.Latest(), *prov.MigrationsVersion)
	require.Equal(t, tenantmigrate.StatusCompleted, prov.MigrationsStatus)
	require.Contains(t, prov.DatabaseURL, "/"+f.prefix+"_prov")

	migURL := pgtest.NewDatabase(t)
	_, err = f.o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "mig", DatabaseURL: migURL})
	require.NoError(t, err)
	v, err := f.o.MigrateTenant(ctx, "mig")
	require.NoError(t, err)
	require.Equal(t, f.o.Latest(), v)

	got, err := f.o.GetTenant(ctx, "prov")
	require.NoError(t, err)
	require.Equal(t, pgDumpSchema(t, migURL), pgDumpSchema(t, got.DatabaseURL))
	require.Equal(t, versionRows(t, migURL), versionRows(t, got.DatabaseURL))
	cur, pending, err := f.o.PendingVersions(ctx, "prov")
	require.NoError(t, err)
	require.Equal(t, f.o.Latest(), cur)
	require.Empty(t, pending)

	// The template: closed to connections, marked a template.
	conn, err := pgx.Connect(ctx, f.serverURL)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var isTemplate, allowConn bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT datistemplate, datallowconn FROM pg_database WHERE datname = $1`, tenantmigrate.ProvisionTemplateName(f.o)).Scan(&isTemplate, &allowConn))
	require.True(t, isTemplate)
	require.False(t, allowConn)
}

// TestProvisionConcurrent: 20 provisions at once all succeed and the
// template is built once.
func TestProvisionConcurrent(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, uniqueSource(t, fleetMigrations()))
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = f.o.ProvisionTenant(t.Context(), fmt.Sprintf("c%02d", i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "tenant c%02d", i)
	}
	require.Equal(t, 1, f.templatesBuilt())
	require.Len(t, f.serverDatabases(f.prefix+"_c%"), n)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%02d", i)
	}
	require.Equal(t, n, fleettest.CountCompleted(t, f.o.Pool(), ids, f.o.Latest()))
}

// TestProvisionThenRelease: a release after provisioning migrates the
// provisioned tenant like any other, and provisions the next tenant from a
// template of its own latest version.
func TestProvisionThenRelease(t *testing.T) {
	t.Parallel()
	v1 := uniqueSource(t, fleetMigrations()) // versions 1-4
	f := newProvisionFixture(t, v1)
	ctx := t.Context()
	// The provision writes its row in the run history.
	_, err := f.o.ProvisionTenant(ctx, "early")
	require.NoError(t, err)
	var history string
	require.NoError(t, f.o.Pool().QueryRow(ctx, `SELECT string_agg(tenant_id || ' ' || coalesce(from_version::text, '-') || '->' || to_version || ' ' || result || ' ' || trigger, ',')
		FROM tenantmigrate.runs`).Scan(&history))
	require.Equal(t, "early -->4 completed provisioned", history)

	v2 := fstest.MapFS{}
	for k, v := range v1 {
		v2[k] = v
	}
	v2["00005_notes.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE notes (id bigint PRIMARY KEY);\n")}
	o2 := f.open(v2)
	require.Equal(t, int64(5), o2.Latest())
	res, err := o2.MigrateTenants(ctx, tenantmigrate.Selection{AllBehind: true}, tenantmigrate.MigrateOptions{})
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Completed)
	st, err := o2.TenantState(ctx, "early")
	require.NoError(t, err)
	require.True(t, o2.IsLatest(st))
	early, err := o2.GetTenant(ctx, "early")
	require.NoError(t, err)
	f.exec(early.DatabaseURL, "INSERT INTO notes VALUES (1)")

	late, err := o2.ProvisionTenant(ctx, "late")
	require.NoError(t, err)
	require.Equal(t, int64(5), *late.MigrationsVersion)
	f.exec(late.DatabaseURL, "INSERT INTO notes VALUES (1)")
	require.Equal(t, 2, f.templatesBuilt()) // one per release
}

// TestProvisionFailuresLeaveNothing: every failed provision leaves no tenant
// registered and no database of its own behind; a database that existed
// before is not touched.
func TestProvisionFailuresLeaveNothing(t *testing.T) {
	t.Parallel()
	f := newProvisionFixture(t, uniqueSource(t, fleetMigrations()))
	ctx := t.Context()
	notRegistered := func(id string) {
		t.Helper()
		_, err := f.o.TenantState(ctx, id)
		require.ErrorIs(t, err, tenantmigrate.ErrTenantNotFound)
	}

	// The clone fails: its name is taken by a database that has data.
	f.exec(f.serverURL, "CREATE DATABASE "+f.prefix+"_taken")
	u, err := url.Parse(f.serverURL)
	require.NoError(t, err)
	u.Path = "/" + f.prefix + "_taken"
	takenURL := u.String()
	f.exec(takenURL, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
	_, err = f.o.ProvisionTenant(ctx, "taken")
	require.ErrorIs(t, err, tenantmigrate.ErrDatabaseExists)
	notRegistered("taken")
	f.exec(takenURL, "SELECT 1 FROM precious") // still there

	// Registering fails after the clone: the clone is dropped.
	f.exec(f.cpURL, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
		CREATE TRIGGER refuse BEFORE INSERT ON tenantmigrate.tenants FOR EACH ROW WHEN (NEW.id = 'boom') EXECUTE FUNCTION refuse()`)
	_, err = f.o.ProvisionTenant(ctx, "boom")
	require.ErrorContains(t, err, "refused")
	notRegistered("boom")
	require.Empty(t, f.serverDatabases(f.prefix+"_boom"))

	// The id is taken: no database is created.
	_, err = f.o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "dup", DatabaseURL: takenURL})
	require.NoError(t, err)
	_, err = f.o.ProvisionTenant(ctx, "dup")
	require.ErrorIs(t, err, tenantmigrate.ErrTenantExists)
	require.Empty(t, f.serverDatabases(f.prefix+"_dup"))

	// A name over 63 bytes is bad input.
	_, err = f.o.ProvisionTenant(ctx, strings.Repeat("x", 60))
	require.ErrorContains(t, err, "longer than 63 bytes")

	// Deprovisioning refuses a registered tenant and leaves its database.
	require.ErrorIs(t, f.o.DeprovisionTenant(ctx, "dup"), tenantmigrate.ErrNotProvisioned)
	f.exec(takenURL, "SELECT 1 FROM precious")
	_, err = f.o.TenantState(ctx, "dup")
	require.NoError(t, err)

	// Deprovisioning a provisioned tenant drops its database, and refuses
	// when a database of that name is not the one it created.
	_, err = f.o.ProvisionTenant(ctx, "gone")
	require.NoError(t, err)
	_, err = f.o.ProvisionTenant(ctx, "swapped")
	require.NoError(t, err)
	require.NoError(t, f.o.DeprovisionTenant(ctx, "gone"))
	notRegistered("gone")
	require.Empty(t, f.serverDatabases(f.prefix+"_gone"))
	f.exec(f.serverURL, "DROP DATABASE "+f.prefix+"_swapped")
	f.exec(f.serverURL, "CREATE DATABASE "+f.prefix+"_swapped")
	require.ErrorIs(t, f.o.DeprovisionTenant(ctx, "swapped"), tenantmigrate.ErrNotProvisioned)
	require.Len(t, f.serverDatabases(f.prefix+"_swapped"), 1)
}

// TestProvisionBrokenSource: a template whose migration fails is not
// built: the provision fails naming it, and leaves no tenant, template or
// build database.
func TestProvisionBrokenSource(t *testing.T) {
	t.Parallel()
	src := uniqueSource(t, fleettest.Migrations("CREATE TABLE a (id int);", "ALTER TABLE no_such_table ADD COLUMN x int;"))
	f := newProvisionFixture(t, src)
	_, err := f.o.ProvisionTenant(t.Context(), "t1")
	require.ErrorContains(t, err, "no_such_table")
	_, err = f.o.TenantState(t.Context(), "t1")
	require.ErrorIs(t, err, tenantmigrate.ErrTenantNotFound)
	require.Empty(t, f.serverDatabases(f.prefix+"_%"))
	require.Empty(t, f.serverDatabases(tenantmigrate.ProvisionTemplateName(f.o)+"%"))
}

// TestProvisionNotConfigured: without a provision URL, provisioning is a
// clear error, and a bad provision config is refused by New.
func TestProvisionNotConfigured(t *testing.T) {
	t.Parallel()
	cpURL := fleettest.NewControlPlane(t, "")
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: fleetMigrations()})
	_, err := o.ProvisionTenant(t.Context(), "x")
	require.ErrorIs(t, err, tenantmigrate.ErrProvisioningNotConfigured)
	require.ErrorIs(t, o.DeprovisionTenant(t.Context(), "x"), tenantmigrate.ErrProvisioningNotConfigured)

	for _, pc := range []tenantmigrate.ProvisionConfig{
		{NameTemplate: "t_{id}"},
		{URL: "postgres://u@h/postgres", NameTemplate: "no_placeholder"},
		{URL: "postgres://u@h/postgres", NameTemplate: "Bad-{id}"},
		{URL: "postgres://u@h/postgres", TenantURLTemplate: "postgres://u@h/fixed"},
		{URL: "host=h dbname=postgres"},
	} {
		_, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: cpURL, Migrations: fleetMigrations(), EncryptionKey: bgKey, Provision: pc})
		require.ErrorIs(t, err, tenantmigrate.ErrInvalidConfig, "%+v", pc)
	}
}
