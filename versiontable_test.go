package tenantmigrate_test

import (
	"context"
	"database/sql"
	"maps"
	"net/url"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for plain goose
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// schemaFirstSource is a release whose first migration creates the schema the
// tenants' search_path names first; version 2 is a data migration. With n = 3
// it adds a third version, the next release.
func schemaFirstSource(n int) fstest.MapFS {
	fsys := fstest.MapFS{
		"00001_app.sql":    {Data: []byte("-- +goose Up\nCREATE SCHEMA app;\n")},
		"00002_events.sql": {Data: []byte("-- +goose Up\nCREATE TABLE events (id bigserial PRIMARY KEY);\nINSERT INTO events DEFAULT VALUES;\n")},
	}
	if n >= 3 {
		fsys["00003_notes.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE notes (id bigint PRIMARY KEY);\n")}
	}
	return fsys
}

// searchPathTenant returns a fresh tenant database and its URL with
// search_path=app,public.
func searchPathTenant(t *testing.T) (dbURL, tenantURL string) {
	t.Helper()
	dbURL = pgtest.NewDatabase(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", "app,public")
	u.RawQuery = q.Encode()
	return dbURL, u.String()
}

// requireOneVersionTable checks the tenant database has exactly one version
// table, public's, with versions 1..latest recorded once, and the data
// migration's row once.
func requireOneVersionTable(t *testing.T, dbURL string, latest int64) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT schemaname::text FROM pg_tables WHERE tablename = 'goose_db_version'`)
	require.NoError(t, err)
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"public"}, schemas)
	rows, err = conn.Query(ctx, `SELECT version_id FROM public.goose_db_version WHERE version_id > 0 ORDER BY id`)
	require.NoError(t, err)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	var want []int64
	for v := int64(1); v <= latest; v++ {
		want = append(want, v)
	}
	require.Equal(t, want, versions)
	var events int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM app.events`).Scan(&events))
	require.Equal(t, 1, events, "the data migration ran once")
}

// TestVersionTablePinnedThroughStrategies: a tenant whose search_path starts
// with a schema its first migration creates gets release 1 and then release 2
// through on_request and through full_fleet, and ends with one version table,
// each version applied once.
func TestVersionTablePinnedThroughStrategies(t *testing.T) {
	t.Parallel()
	for _, strategy := range []tenantmigrate.Strategy{tenantmigrate.StrategyOnRequest, tenantmigrate.StrategyFullFleet} {
		t.Run(string(strategy), func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			cp := pgtest.NewDatabase(t)
			dbURL, tenantURL := searchPathTenant(t)

			o1 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: schemaFirstSource(2), Strategy: strategy})
			_, err := o1.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: tenantURL})
			require.NoError(t, err)
			// Never migrated: migrated during its request under every strategy.
			require.NoError(t, o1.EnsureMigrated(ctx, "acme"))
			requireOneVersionTable(t, dbURL, 2)
			o1.Close()

			cfg := tenantmigrate.Config{DatabaseURL: cp, Migrations: schemaFirstSource(3), Strategy: strategy, RunWorkers: true}
			o2 := startOrchestrator(t, cfg)
			if strategy == tenantmigrate.StrategyOnRequest {
				require.NoError(t, o2.EnsureMigrated(ctx, "acme"))
			}
			waitFor(t, 60*time.Second, "acme COMPLETED at 3", func() bool {
				st, err := o2.TenantState(ctx, "acme")
				require.NoError(t, err)
				return st.MigrationsStatus == tenantmigrate.StatusCompleted && st.MigrationsVersion != nil && *st.MigrationsVersion == 3
			})
			requireOneVersionTable(t, dbURL, 3)

			v := o2.VerifyTenant(ctx, mustTenant(t, o2, "acme"))
			require.True(t, v.OK(), "verify: %v", v.Problems())
		})
	}
}

// TestTwoVersionTablesRecordedFailed: a tenant already hit by the bug has two
// version tables; its run applies nothing, it is recorded failed with an
// error naming both, and verify names them.
func TestTwoVersionTablesRecordedFailed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	dbURL, tenantURL := searchPathTenant(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: schemaFirstSource(2)})
	_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: tenantURL})
	require.NoError(t, err)
	_, err = o.MigrateTenant(ctx, "acme")
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE app.goose_db_version (LIKE public.goose_db_version INCLUDING ALL);
		INSERT INTO app.goose_db_version (version_id, is_applied) VALUES (0, true), (1, true), (2, true)`)
	require.NoError(t, err)
	o.Close()

	o2 := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: schemaFirstSource(3)})
	_, err = o2.MigrateTenant(ctx, "acme")
	require.ErrorIs(t, err, tenantmigrate.ErrVersionTableConflict)
	st, err := o2.TenantState(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus)
	require.Contains(t, st.LastError, `"app"."goose_db_version" and "public"."goose_db_version"`)
	var notes bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('app.notes') IS NOT NULL`).Scan(&notes))
	require.False(t, notes, "nothing applied")

	v := o2.VerifyTenant(ctx, mustTenant(t, o2, "acme"))
	require.False(t, v.OK())
	require.Equal(t, []string{`"app"."goose_db_version"`, `"public"."goose_db_version"`}, v.VersionTables)
	require.Contains(t, v.Problems()[0], "more than one version table")
}

func mustTenant(t *testing.T, o *tenantmigrate.Orchestrator, id string) tenantmigrate.Tenant {
	t.Helper()
	tn, err := o.GetTenant(t.Context(), id)
	require.NoError(t, err)
	return tn
}

// TestAdoptedFleetVersionTableConfigured: a tenant plain goose migrated with
// search_path=app keeps its table in app. Config.VersionTable (the CLI's
// --version-table) naming another table applies nothing, records the tenant
// FAILED naming both and verify says which is configured and which exists;
// naming app's migrates it in place, and verify finds nothing wrong.
func TestAdoptedFleetVersionTableConfigured(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := pgtest.NewDatabase(t)
	dbURL := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE SCHEMA app`)
	require.NoError(t, err)

	files := fstest.MapFS{
		"00001_a.sql": {Data: []byte("-- +goose Up\nCREATE TABLE app.a (id int);\nINSERT INTO app.a VALUES (1);\n")},
		"00002_b.sql": {Data: []byte("-- +goose Up\nCREATE TABLE app.b (id int);\n")},
	}
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", "app")
	u.RawQuery = q.Encode()
	gooseDB, err := sql.Open("pgx", u.String())
	require.NoError(t, err)
	p, err := goose.NewProvider(goose.DialectPostgres, gooseDB, files, goose.WithDisableGlobalRegistry(true))
	require.NoError(t, err)
	_, err = p.Up(ctx)
	require.NoError(t, err)
	require.NoError(t, gooseDB.Close())

	release := maps.Clone(files)
	release["00003_c.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nCREATE TABLE app.c (id int);\n")}
	versionTables := func() []string {
		rows, err := conn.Query(ctx, `SELECT schemaname::text FROM pg_tables WHERE tablename = 'goose_db_version' ORDER BY 1`)
		require.NoError(t, err)
		schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return schemas
	}
	hasC := func() bool {
		var ok bool
		require.NoError(t, conn.QueryRow(ctx, `SELECT to_regclass('app.c') IS NOT NULL`).Scan(&ok))
		return ok
	}

	// The tenant is registered without search_path: the table is found by
	// the catalog, not by the session.
	wrong := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: release, VersionTable: "public.goose_db_version"})
	_, err = wrong.CreateTenant(ctx, tenantmigrate.Tenant{ID: "adopted", DatabaseURL: dbURL})
	require.NoError(t, err)
	_, err = wrong.MigrateTenant(ctx, "adopted")
	require.ErrorIs(t, err, tenantmigrate.ErrVersionTableConflict)
	st, err := wrong.TenantState(ctx, "adopted")
	require.NoError(t, err)
	require.Equal(t, tenantmigrate.StatusFailed, st.MigrationsStatus)
	require.Contains(t, st.LastError, `configured version table "public"."goose_db_version" does not exist, but "app"."goose_db_version" does`)
	require.False(t, hasC(), "nothing applied")
	require.Equal(t, []string{"app"}, versionTables(), "no second table")
	v := wrong.VerifyTenant(ctx, mustTenant(t, wrong, "adopted"))
	require.False(t, v.OK())
	require.Equal(t, `"public"."goose_db_version"`, v.ConfiguredVersionTable)
	require.Equal(t, []string{`"app"."goose_db_version"`}, v.VersionTables)
	require.Equal(t, []string{`inconsistent: the configured version table "public"."goose_db_version" does not exist, ` +
		`but "app"."goose_db_version" does (tenantmigrate applies nothing to it until the configured table is the one that exists)`}, v.Problems())
	wrong.Close()

	right := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cp, Migrations: release, VersionTable: "app.goose_db_version"})
	version, err := right.MigrateTenant(ctx, "adopted")
	require.NoError(t, err)
	require.Equal(t, int64(3), version)
	require.True(t, hasC())
	require.Equal(t, []string{"app"}, versionTables())
	applied, err := right.AppliedVersions(ctx, "adopted")
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, applied)
	var rows int
	require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM app.goose_db_version WHERE version_id > 0`).Scan(&rows))
	require.Equal(t, 3, rows, "each version recorded once")
	v = right.VerifyTenant(ctx, mustTenant(t, right, "adopted"))
	require.True(t, v.OK(), "verify: %v", v.Problems())
}
