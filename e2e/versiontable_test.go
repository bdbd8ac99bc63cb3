package e2e

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for plain goose
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// These tests are issue 16 (RELIABILITY.md, section 2, guarantee 4) through
// real processes: a tenant's goose version table stays where it is whatever
// search_path resolves to, through serve's strategies, migrate --all,
// --version-table / VERSION_TABLE and verify.

// schemaFirstUps is a release whose first migration creates the schema the
// tenant's search_path names first; version 2 is a data migration (a row
// written twice would show). With notes, it has version 3, the next release.
func schemaFirstUps(notes bool) []string {
	ups := []string{
		"CREATE SCHEMA IF NOT EXISTS app;",
		"CREATE TABLE app.events (id bigserial PRIMARY KEY);\nINSERT INTO app.events DEFAULT VALUES;",
	}
	if notes {
		ups = append(ups, "CREATE TABLE app.notes (id bigint PRIMARY KEY);")
	}
	return ups
}

// withSearchPath returns dbURL with search_path set.
func withSearchPath(t *testing.T, dbURL, searchPath string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", searchPath)
	u.RawQuery = q.Encode()
	return u.String()
}

// versionTableContent is what a tenant database holds of the schema-first
// release: the schemas with a goose_db_version, the version rows (> 0) of
// the table in schema, in insertion order, and the data migration's rows.
type versionTableContent struct {
	schemas  []string
	versions []int64
	events   int
}

func readVersionTables(t *testing.T, dbURL, schema string) versionTableContent {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var c versionTableContent
	rows, err := conn.Query(ctx, `SELECT schemaname::text FROM pg_tables WHERE tablename = 'goose_db_version' ORDER BY 1`)
	require.NoError(t, err)
	c.schemas, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	if slices.Contains(c.schemas, schema) {
		rows, err = conn.Query(ctx, "SELECT version_id FROM "+pgx.Identifier{schema, "goose_db_version"}.Sanitize()+" WHERE version_id > 0 ORDER BY id")
		require.NoError(t, err)
		c.versions, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
	}
	require.NoError(t, conn.QueryRow(ctx, `SELECT CASE WHEN to_regclass('app.events') IS NULL THEN 0
		ELSE (SELECT count(*) FROM app.events) END`).Scan(&c.events))
	return c
}

// tenantGet sends GET /tenant for tenant id to s and returns the status.
func tenantGet(t *testing.T, s *server, id string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/tenant", nil)
	require.NoError(t, err)
	req.Host = id + ".local.dev"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	return resp.StatusCode
}

// TestVersionTablePinnedThroughServe: a database tenant registered with
// search_path=app,public, whose first migration creates app, gets release 1
// from a serve process and release 2 from the next one, under full_fleet
// (the start's fleet scan) and on_request (the tenant's request). It ends
// with one version table, public's, versions 1-3 recorded once, the data
// migration's row once, and verify (a process) finds nothing wrong. On the
// code before issue 16, release 2 created app.goose_db_version and ran
// version 1 again.
func TestVersionTablePinnedThroughServe(t *testing.T) {
	t.Parallel()
	for _, strategy := range []string{"full_fleet", "on_request"} {
		t.Run(strategy, func(t *testing.T) {
			t.Parallel()
			cpURL := pgtest.NewDatabase(t)
			dbURL := pgtest.NewDatabase(t)
			cp := newPool(t, cpURL)
			release1, release2 := writeMigrations(t, schemaFirstUps(false)...), writeMigrations(t, schemaFirstUps(true)...)

			s1 := startServer(t, "serve-release-1", serveEnv(cpURL, release1, strategy))
			s1.waitListening(t)
			body, err := json.Marshal(map[string]string{"databaseUrl": withSearchPath(t, dbURL, "app,public")})
			require.NoError(t, err)
			require.Equal(t, http.StatusCreated, s1.admin(t, http.MethodPost, "/admin/tenants/acme", string(body), nil))
			// Never migrated: migrated during its first request under every strategy.
			require.Equal(t, http.StatusOK, tenantGet(t, s1, "acme"))
			fleettest.WaitAllCompleted(t, cp, []string{"acme"}, 2, pollEvery, 60*time.Second)
			require.Equal(t, versionTableContent{schemas: []string{"public"}, versions: []int64{1, 2}, events: 1},
				readVersionTables(t, dbURL, "public"))
			require.Zero(t, s1.stop(t, 30*time.Second))

			s2 := startServer(t, "serve-release-2", serveEnv(cpURL, release2, strategy))
			s2.waitListening(t)
			if strategy == "on_request" {
				require.Equal(t, http.StatusOK, tenantGet(t, s2, "acme"))
			}
			fleettest.WaitAllCompleted(t, cp, []string{"acme"}, 3, pollEvery, 60*time.Second)
			require.Equal(t, versionTableContent{schemas: []string{"public"}, versions: []int64{1, 2, 3}, events: 1},
				readVersionTables(t, dbURL, "public"))
			require.Zero(t, s2.stop(t, 30*time.Second))

			v := startCommand(t, "verify", serveEnv(cpURL, release2, strategy), "verify")
			require.Zero(t, v.wait(t, 60*time.Second), "verify: %s", v.out.String())
		})
	}
}

// TestVersionTableThroughCLI: two tenants through migrate --all and verify
// processes.
//   - "twice" was hit by the old bug: public.goose_db_version from release 1,
//     then a second table in app. migrate --all applies nothing to it and
//     records it FAILED_STALE (not retryable) naming both tables; verify names both and exits 1.
//   - "adopted" was migrated by plain goose with search_path=app, so its table
//     is app's, and it is registered without search_path. migrate --all
//     without --version-table finds it there; with --version-table
//     app.goose_db_version it takes it to release 2 in place, and verify with
//     VERSION_TABLE finds nothing wrong with it.
func TestVersionTableThroughCLI(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	twiceURL, adoptedURL := pgtest.NewDatabase(t), pgtest.NewDatabase(t)
	cp := newPool(t, cpURL)
	release1, release2 := writeMigrations(t, schemaFirstUps(false)...), writeMigrations(t, schemaFirstUps(true)...)

	// The adopted tenant: plain goose, search_path=app.
	adopted, err := pgx.Connect(ctx, adoptedURL)
	require.NoError(t, err)
	defer adopted.Close(ctx)
	_, err = adopted.Exec(ctx, `CREATE SCHEMA app`)
	require.NoError(t, err)
	gooseDB, err := sql.Open("pgx", withSearchPath(t, adoptedURL, "app"))
	require.NoError(t, err)
	p, err := goose.NewProvider(goose.DialectPostgres, gooseDB, fleettest.Migrations(schemaFirstUps(false)...), goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = p.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, gooseDB.Close())

	o, err := tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: encryptionKey, ReadOnly: true})
	require.NoError(t, err)
	for id, u := range map[string]string{"twice": withSearchPath(t, twiceURL, "app,public"), "adopted": adoptedURL} {
		_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: id, DatabaseURL: u})
		require.NoError(t, err)
	}
	o.Close()

	// Release 1: twice gets public's table; adopted's is found in app.
	m1 := startCommand(t, "migrate release 1", serveEnv(cpURL, release1, "on_request"), "migrate", "--all")
	require.Zero(t, m1.wait(t, 120*time.Second), "migrate --all: %s", m1.out.String())
	fleettest.WaitAllCompleted(t, cp, []string{"twice", "adopted"}, 2, pollEvery, 10*time.Second)
	require.Equal(t, versionTableContent{schemas: []string{"app"}, versions: []int64{1, 2}, events: 1}, readVersionTables(t, adoptedURL, "app"))

	// The old bug's trace: a second table in twice's app.
	twice, err := pgx.Connect(ctx, twiceURL)
	require.NoError(t, err)
	defer twice.Close(ctx)
	_, err = twice.Exec(ctx, `CREATE TABLE app.goose_db_version (LIKE public.goose_db_version INCLUDING ALL);
		INSERT INTO app.goose_db_version (version_id, is_applied) VALUES (0, true), (1, true), (2, true)`)
	require.NoError(t, err)

	m2 := startCommand(t, "migrate release 2", serveEnv(cpURL, release2, "on_request"),
		"migrate", "--all", "--version-table", "app.goose_db_version")
	require.NotZero(t, m2.wait(t, 120*time.Second), "migrate --all with a tenant with two version tables: %s", m2.out.String())

	both := `"app"."goose_db_version" and "public"."goose_db_version"`
	rows := readControlPlane(t, cp)
	// Not retryable: FAILED_STALE, the failed state retries leave alone.
	require.Equal(t, "FAILED_STALE", *rows["twice"].status)
	require.Equal(t, int64(2), *rows["twice"].version)
	require.Contains(t, *rows["twice"].lastError, both)
	var notes bool
	require.NoError(t, twice.QueryRow(ctx, `SELECT to_regclass('app.notes') IS NOT NULL`).Scan(&notes))
	require.False(t, notes, "nothing applied to twice")
	require.Equal(t, versionTableContent{schemas: []string{"app", "public"}, versions: []int64{1, 2}, events: 1}, readVersionTables(t, twiceURL, "public"))

	require.Equal(t, "COMPLETED", *rows["adopted"].status)
	require.Equal(t, int64(3), *rows["adopted"].version)
	require.Equal(t, versionTableContent{schemas: []string{"app"}, versions: []int64{1, 2, 3}, events: 1}, readVersionTables(t, adoptedURL, "app"))

	v := startCommand(t, "verify", serveEnv(cpURL, release2, "on_request", "VERSION_TABLE=app.goose_db_version"), "verify")
	require.Equal(t, 1, v.wait(t, 60*time.Second), "verify: %s", v.out.String())
	require.Contains(t, v.out.String(), "twice: inconsistent: more than one version table, "+both)
	require.NotContains(t, v.out.String(), "adopted:")
}
