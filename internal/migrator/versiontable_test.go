package migrator

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"
)

// A release of a migration set whose first file creates the schema that the tenant's
// search_path names first (Supabase-style tenants do this with "storage"). Version 2 is a data
// migration: running it twice would show as a second row.
var schemaFirstRelease1 = map[string]string{
	"00001_app_schema.sql": "-- +goose Up\nCREATE SCHEMA app;\n",
	"00002_events.sql": "-- +goose Up\nCREATE TABLE events (id bigserial PRIMARY KEY, what text NOT NULL);\n" +
		"INSERT INTO events (what) VALUES ('seeded');\n",
}

func schemaFirstRelease2() map[string]string {
	files := map[string]string{"00003_notes.sql": "-- +goose Up\nCREATE TABLE notes (id bigint PRIMARY KEY);\n"}
	for k, v := range schemaFirstRelease1 {
		files[k] = v
	}
	return files
}

// versionTables lists the schemas holding a goose_db_version table in conn's database.
func versionTables(t testing.TB, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(),
		`SELECT schemaname::text FROM pg_tables WHERE tablename = 'goose_db_version' ORDER BY 1`)
	require.NoError(t, err)
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return schemas
}

// requireAppliedOnce checks that the database holds exactly one version table, in schema, with
// each of versions recorded once (and goose's 0), and that the data migration ran once.
func requireAppliedOnce(t testing.TB, conn *pgx.Conn, schema string, versions ...int64) {
	t.Helper()
	require.Equal(t, []string{schema}, versionTables(t, conn), "version tables")
	require.Equal(t, append([]int64{0}, versions...), appliedVersions(t, conn, schema))
	var seeded int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT count(*) FROM app.events`).Scan(&seeded))
	require.Equal(t, 1, seeded, "rows of the data migration")
}

// TestVersionTableStaysPutWhenSearchPathSchemaAppears is the data-integrity bug of a
// search_path whose first schema a migration creates: goose's unqualified table moved to that
// schema on the second run and every migration ran again. The table now stays in public.
func TestVersionTableStaysPutWhenSearchPathSchemaAppears(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	t.Run("URLSearchPath", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		target := Target{DatabaseURL: withQuery(t, dbURL, map[string]string{"search_path": "app,public"})}
		runTwoReleases(t, ctx, target)
		requireAppliedOnce(t, connect(t, dbURL), "public", 1, 2, 3)
	})

	t.Run("AlterDatabaseSetSearchPath", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		release1 := map[string]string{
			"00001_app_schema.sql": "-- +goose Up\nCREATE SCHEMA app;\n" +
				"-- +goose StatementBegin\nDO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = app, public', current_database()); END $$;\n" +
				"-- +goose StatementEnd\n",
			"00002_events.sql": schemaFirstRelease1["00002_events.sql"],
		}
		release2 := map[string]string{"00003_notes.sql": "-- +goose Up\nCREATE TABLE notes (id bigint PRIMARY KEY);\n"}
		for k, v := range release1 {
			release2[k] = v
		}
		target := Target{DatabaseURL: dbURL}
		_, err := newMigrator(t, Config{FS: sqlFS(release1)}).Migrate(ctx, target)
		require.NoError(t, err)
		res, err := newMigrator(t, Config{FS: sqlFS(release2)}).Migrate(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{3}, res.Applied)
		conn := connect(t, dbURL)
		require.Equal(t, "app", queryString(t, conn, `SELECT current_schema()`), "the new session's current schema")
		require.Equal(t, []string{"public"}, versionTables(t, conn))
		require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, conn, "public"))
	})

	t.Run("AlterRoleSetSearchPath", func(t *testing.T) {
		t.Parallel()
		// ALTER ROLE ... SET search_path changes the next session's current_schema(); the
		// login role is the test's own, so no other test's sessions see it.
		_, admin, _, roleURL := newLoginRole(t)
		release1 := map[string]string{
			"00001_app_schema.sql": "-- +goose Up\nCREATE SCHEMA app;\nALTER ROLE CURRENT_USER SET search_path = app, public;\n",
			"00002_events.sql":     "-- +goose Up\nCREATE TABLE public.events (id bigserial PRIMARY KEY, what text NOT NULL);\nINSERT INTO public.events (what) VALUES ('seeded');\n",
		}
		release2 := map[string]string{"00003_notes.sql": "-- +goose Up\nCREATE TABLE notes (id bigint PRIMARY KEY);\n"}
		for k, v := range release1 {
			release2[k] = v
		}
		target := Target{DatabaseURL: roleURL}
		_, err := newMigrator(t, Config{FS: sqlFS(release1)}).Migrate(ctx, target)
		require.NoError(t, err)
		res, err := newMigrator(t, Config{FS: sqlFS(release2)}).Migrate(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{3}, res.Applied)
		require.Equal(t, "app", queryString(t, connect(t, roleURL), `SELECT current_schema()`), "the role's new session's current schema")
		require.Equal(t, []string{"public"}, versionTables(t, admin))
		require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, admin, "public"))
		require.True(t, tableExists(t, admin, "app", "notes"), "release 2 follows the role's search_path")
		var seeded int
		require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM public.events").Scan(&seeded))
		require.Equal(t, 1, seeded, "rows of the data migration")
	})

	t.Run("SetSearchPathInsideARun", func(t *testing.T) {
		t.Parallel()
		// A migration's session-level SET search_path outlives its transaction: goose's
		// unqualified table then named app's (none: the run failed recording version 1) for
		// the versions after it on that connection.
		dbURL := newTestDB(t)
		release1 := map[string]string{
			"00001_app_schema.sql": "-- +goose Up\nCREATE SCHEMA app;\nSET search_path = app;\n",
			"00002_events.sql":     "-- +goose Up\nCREATE TABLE app.events (id bigserial PRIMARY KEY, what text NOT NULL);\nINSERT INTO app.events (what) VALUES ('seeded');\n",
		}
		target := Target{DatabaseURL: dbURL}
		res, err := newMigrator(t, Config{FS: sqlFS(release1)}).Migrate(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2}, res.Applied)
		res, err = newMigrator(t, Config{FS: sqlFS(schemaFirstRelease2WithFiles(release1))}).Migrate(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{3}, res.Applied)
		requireAppliedOnce(t, connect(t, dbURL), "public", 1, 2, 3)
	})

	t.Run("UserSchemaAuthorization", func(t *testing.T) {
		t.Parallel()
		// The default search_path, "$user", public: a schema named after the login role
		// becomes current_schema() once CREATE SCHEMA AUTHORIZATION made it.
		_, admin, role, roleURL := newLoginRole(t)

		release1 := map[string]string{
			"00001_user_schema.sql": "-- +goose Up\nCREATE SCHEMA AUTHORIZATION " + role + ";\n",
			"00002_events.sql":      "-- +goose Up\nCREATE TABLE events (id bigserial PRIMARY KEY, what text NOT NULL);\nINSERT INTO events (what) VALUES ('seeded');\n",
		}
		release2 := map[string]string{"00003_notes.sql": "-- +goose Up\nCREATE TABLE notes (id bigint PRIMARY KEY);\n"}
		for k, v := range release1 {
			release2[k] = v
		}
		target := Target{DatabaseURL: roleURL}
		_, err := newMigrator(t, Config{FS: sqlFS(release1)}).Migrate(ctx, target)
		require.NoError(t, err)
		res, err := newMigrator(t, Config{FS: sqlFS(release2)}).Migrate(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{3}, res.Applied)
		require.Equal(t, []string{"public"}, versionTables(t, admin))
		require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, admin, "public"))
		var seeded int
		require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM "+role+".events").Scan(&seeded))
		require.Equal(t, 1, seeded)

		// Pending and Applied read the same table.
		current, pending, err := newMigrator(t, Config{FS: sqlFS(release2)}).Pending(ctx, target)
		require.NoError(t, err)
		require.Equal(t, int64(3), current)
		require.Empty(t, pending)
	})
}

// schemaFirstRelease2WithFiles is release 1's files and version 3, a new table.
func schemaFirstRelease2WithFiles(release1 map[string]string) map[string]string {
	files := map[string]string{"00003_notes.sql": "-- +goose Up\nCREATE TABLE public.notes (id bigint PRIMARY KEY);\n"}
	for k, v := range release1 {
		files[k] = v
	}
	return files
}

// newLoginRole creates a test database and a login role of the test's own with every
// privilege on it and on its public schema. It returns the database's (superuser) URL, a
// connection to it, the role and a URL that logs in as the role. The role is dropped after the
// database.
func newLoginRole(t *testing.T) (dbURL string, admin *pgx.Conn, role, roleURL string) {
	t.Helper()
	role = "tm_vt_" + randomSuffix(t)
	srv := serverURL(t)
	// Registered before the database: cleanups run in reverse, so the role goes after it.
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), srv)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		_, _ = c.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = c.Exec(context.Background(), "DROP ROLE "+role)
	})
	dbURL = newTestDB(t)
	admin = connect(t, dbURL)
	exec(t, admin, "CREATE ROLE "+role+" LOGIN PASSWORD 'pw'")
	exec(t, admin, "GRANT ALL ON DATABASE "+pgx.Identifier{currentDatabase(t, admin)}.Sanitize()+" TO "+role)
	exec(t, admin, "GRANT ALL ON SCHEMA public TO "+role)
	return dbURL, admin, role, withUser(t, dbURL, role, "pw")
}

// runTwoReleases migrates target with release 1 and then release 2 of the schema-first set,
// and checks that release 2 applied only its new version.
func runTwoReleases(t *testing.T, ctx context.Context, target Target) {
	t.Helper()
	res, err := newMigrator(t, Config{FS: sqlFS(schemaFirstRelease1)}).Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, res.Applied)

	m2 := newMigrator(t, Config{FS: sqlFS(schemaFirstRelease2())})
	current, pending, err := m2.Pending(ctx, target)
	require.NoError(t, err)
	require.Equal(t, int64(2), current)
	require.Equal(t, []int64{3}, pending)

	res, err = m2.Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{3}, res.Applied)
	require.Equal(t, int64(3), res.Version)

	applied, err := m2.Applied(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, applied)

	// A third run finds nothing to do.
	res, err = m2.Migrate(ctx, target)
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	require.Equal(t, int64(3), res.Version)
}

// TestTwoVersionTablesFailWithoutApplying: a tenant already hit by the bug (or given a second
// table by hand) is refused, naming both tables, with nothing applied; Inspect reports it.
func TestTwoVersionTablesFailWithoutApplying(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	target := Target{DatabaseURL: withQuery(t, dbURL, map[string]string{"search_path": "app,public"})}
	conn := connect(t, dbURL)

	// The trace of the old bug: release 1 recorded in public, the schema app created, then a
	// second table in app.
	_, err := newMigrator(t, Config{FS: sqlFS(schemaFirstRelease1)}).Migrate(ctx, target)
	require.NoError(t, err)
	exec(t, conn, `CREATE TABLE app.goose_db_version (LIKE public.goose_db_version INCLUDING ALL)`)
	exec(t, conn, `INSERT INTO app.goose_db_version (version_id, is_applied) VALUES (0, true), (1, true), (2, true)`)

	m := newMigrator(t, Config{FS: sqlFS(schemaFirstRelease2())})
	res, err := m.Migrate(ctx, target)
	require.ErrorIs(t, err, ErrVersionTableConflict)
	var conflict *VersionTableConflictError
	require.ErrorAs(t, err, &conflict)
	require.Equal(t, []VersionTable{{"app", "goose_db_version"}, {"public", "goose_db_version"}}, conflict.Found)
	require.Contains(t, err.Error(), `"app"."goose_db_version" and "public"."goose_db_version"`)
	require.False(t, IsRetryable(err))
	require.Empty(t, res.Applied)
	require.False(t, tableExists(t, conn, "app", "notes"), "nothing applied")
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "public"))
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "app"))

	_, _, err = m.Pending(ctx, target)
	require.ErrorIs(t, err, ErrVersionTableConflict)
	_, err = m.Applied(ctx, target)
	require.ErrorIs(t, err, ErrVersionTableConflict)
	in, err := m.Inspect(ctx, target)
	require.NoError(t, err)
	require.NotNil(t, in.Conflict)
	require.Len(t, in.Conflict.Found, 2)
}

// TestAdoptedGooseTableOutsidePublic: a fleet plain goose migrated with search_path=app keeps
// its table in app. It is found there without configuration, and with VersionTable naming it;
// VersionTable naming another table is refused rather than creating a second one.
func TestAdoptedGooseTableOutsidePublic(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	files := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n",
		"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n",
	}
	release2 := map[string]string{"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n"}
	for k, v := range files {
		release2[k] = v
	}

	// gooseFleet migrates a fresh database with plain goose and search_path=app.
	gooseFleet := func(t *testing.T) (dbURL string, target Target) {
		dbURL = newTestDB(t)
		exec(t, connect(t, dbURL), `CREATE SCHEMA app`)
		target = Target{DatabaseURL: withQuery(t, dbURL, map[string]string{"search_path": "app"})}
		cfg, err := pgx.ParseConfig(target.DatabaseURL)
		require.NoError(t, err)
		db := stdlib.OpenDB(*cfg)
		defer db.Close()
		p, err := goose.NewProvider(goose.DialectPostgres, db, sqlFS(files), goose.WithDisableGlobalRegistry(true))
		require.NoError(t, err)
		_, err = p.Up(ctx)
		require.NoError(t, err)
		return dbURL, target
	}

	t.Run("Found", func(t *testing.T) {
		t.Parallel()
		dbURL, target := gooseFleet(t)
		// Even a session whose search_path no longer names app finds it.
		target.DatabaseURL = withQuery(t, dbURL, map[string]string{"search_path": "public"})
		res, err := newMigrator(t, Config{FS: sqlFS(release2)}).Migrate(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{3}, res.Applied)
		conn := connect(t, dbURL)
		require.Equal(t, []string{"app"}, versionTables(t, conn))
		require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, conn, "app"))
	})

	t.Run("Configured", func(t *testing.T) {
		t.Parallel()
		dbURL, target := gooseFleet(t)
		vt, err := ParseVersionTable("app.goose_db_version")
		require.NoError(t, err)
		m := newMigrator(t, Config{FS: sqlFS(release2), VersionTable: &vt})
		res, err := m.Migrate(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{3}, res.Applied)
		in, err := m.Inspect(ctx, target)
		require.NoError(t, err)
		require.Equal(t, vt, in.Table)
		require.Equal(t, []int64{1, 2, 3}, in.Applied)
		require.Equal(t, []string{"app"}, versionTables(t, connect(t, dbURL)))
	})

	t.Run("ConfiguredElsewhere", func(t *testing.T) {
		t.Parallel()
		dbURL, target := gooseFleet(t)
		vt := VersionTable{Schema: "public", Name: "goose_db_version"}
		_, err := newMigrator(t, Config{FS: sqlFS(release2), VersionTable: &vt}).Migrate(ctx, target)
		require.ErrorIs(t, err, ErrVersionTableConflict)
		require.Contains(t, err.Error(), `configured version table "public"."goose_db_version" does not exist, but "app"."goose_db_version" does`)
		conn := connect(t, dbURL)
		require.Equal(t, []string{"app"}, versionTables(t, conn))
		require.False(t, tableExists(t, conn, "app", "c"))
	})

	t.Run("ConfiguredNewTenant", func(t *testing.T) {
		t.Parallel()
		dbURL := newTestDB(t)
		exec(t, connect(t, dbURL), `CREATE SCHEMA meta`)
		vt := VersionTable{Schema: "meta", Name: "versions"}
		m := newMigrator(t, Config{FS: sqlFS(files), VersionTable: &vt})
		_, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
		require.NoError(t, err)
		conn := connect(t, dbURL)
		require.True(t, tableExists(t, conn, "meta", "versions"))
		require.Empty(t, versionTables(t, conn))
		current, pending, err := m.Pending(ctx, Target{DatabaseURL: dbURL})
		require.NoError(t, err)
		require.Equal(t, int64(2), current)
		require.Empty(t, pending)
	})
}

// TestInspectReportsDuplicateVersions: a version recorded twice, the trace of a double apply,
// is reported, not folded away.
func TestInspectReportsDuplicateVersions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	target := Target{DatabaseURL: dbURL}
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n",
	})})
	_, err := m.Migrate(ctx, target)
	require.NoError(t, err)
	in, err := m.Inspect(ctx, target)
	require.NoError(t, err)
	require.Empty(t, in.Duplicates)
	exec(t, connect(t, dbURL), `INSERT INTO public.goose_db_version (version_id, is_applied) VALUES (2, true)`)
	in, err = m.Inspect(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, in.Applied)
	require.Equal(t, []int64{2}, in.Duplicates)
}

func TestParseVersionTable(t *testing.T) {
	t.Parallel()
	vt, err := ParseVersionTable("app.goose_db_version")
	require.NoError(t, err)
	require.Equal(t, VersionTable{Schema: "app", Name: "goose_db_version"}, vt)
	require.Equal(t, `"app"."goose_db_version"`, vt.String())
	for _, bad := range []string{"", "goose_db_version", "a.b.c", ".t", "s.", `s."t"`} {
		_, err := ParseVersionTable(bad)
		require.Error(t, err, bad)
	}
	_, err = New(Config{FS: sqlFS(map[string]string{"00001_a.sql": "-- +goose Up\nSELECT 1;\n"}), VersionTable: &VersionTable{Name: "x"}})
	require.Error(t, err)
}

func queryString(t testing.TB, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	require.NoError(t, conn.QueryRow(t.Context(), sql).Scan(&s))
	return s
}

func currentDatabase(t testing.TB, conn *pgx.Conn) string {
	return queryString(t, conn, `SELECT current_database()`)
}

// withUser returns dbURL with another user and password.
func withUser(t testing.TB, dbURL, user, password string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", user, password, cfg.Host, cfg.Port, cfg.Database)
}

// TestSchemaTenantTableStaysInItsSchema: schema-per-tenant targets keep their table inside
// their schema, whatever else the database holds: a database-per-tenant style
// public.goose_db_version and another tenant's table are neither used nor a conflict, and a
// migration that sets the session's search_path elsewhere does not move the table (goose's
// unqualified table then recorded the next version in public's).
func TestSchemaTenantTableStaysInItsSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	exec(t, conn, `CREATE TABLE public.goose_db_version (id serial PRIMARY KEY, version_id bigint NOT NULL,
		is_applied boolean NOT NULL, tstamp timestamp DEFAULT now())`)
	exec(t, conn, `INSERT INTO public.goose_db_version (version_id, is_applied) VALUES (0, true), (7, true)`)
	files := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\nSET search_path = public;\n",
		"00002_b.sql": "-- +goose Up\nSELECT 1;\n",
	}
	for _, schema := range []string{"acme", "globex"} {
		m := newMigrator(t, Config{FS: sqlFS(files)})
		res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL, Schema: schema})
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2}, res.Applied)
		require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, schema))
		in, err := m.Inspect(ctx, Target{DatabaseURL: dbURL, Schema: schema})
		require.NoError(t, err)
		require.Nil(t, in.Conflict)
		require.Equal(t, VersionTable{Schema: schema, Name: "goose_db_version"}, in.Table)
	}
	require.Equal(t, []string{"acme", "globex", "public"}, versionTables(t, conn))
	require.Equal(t, []int64{0, 7}, appliedVersions(t, conn, "public"), "public's table untouched")
}

// TestVersionTableExistsFindsOneRowAmongManySchemas: in a database of schema tenants, where
// every schema has a goose_db_version, the existence check reads only the one pg_class row of
// the asked schema, through both keys of pg_class_relname_nsp_index, even in a new database
// whose pg_class has not been analyzed (where a pg_tables query by schemaname and tablename
// read every schema's goose_db_version, BENCHMARKS.md section 11), and answers as pg_tables.
func TestVersionTableExistsFindsOneRowAmongManySchemas(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := connect(t, newTestDB(t))
	const schemas = 300
	exec(t, conn, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
		EXECUTE format('CREATE SCHEMA t%%s; CREATE TABLE t%%s.goose_db_version (id int PRIMARY KEY)', i, i);
	END LOOP; END $$`, schemas))
	exec(t, conn, `CREATE SCHEMA v; CREATE VIEW v.goose_db_version AS SELECT 1 AS id`)
	exec(t, conn, `CREATE SCHEMA e`)

	// The last schema's row comes last in pg_class_relname_nsp_index order: a scan by relname
	// alone reads every schema's row before it.
	last := fmt.Sprintf("t%d", schemas)
	var plan []map[string]any
	require.NoError(t, conn.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+versionTableExistsQuery,
		last, "goose_db_version").Scan(&plan))
	var scans []map[string]any
	var walk func(map[string]any)
	walk = func(n map[string]any) {
		if n["Relation Name"] == "pg_class" {
			scans = append(scans, n)
		}
		kids, _ := n["Plans"].([]any)
		for _, k := range kids {
			walk(k.(map[string]any))
		}
	}
	walk(plan[0]["Plan"].(map[string]any))
	require.Len(t, scans, 1, "pg_class scans: %v", plan)
	require.Equal(t, "pg_class_relname_nsp_index", scans[0]["Index Name"], "plan: %v", plan)
	require.Contains(t, scans[0]["Index Cond"], "relnamespace", "both keys of the index: %v", plan)
	require.EqualValues(t, 1, scans[0]["Actual Rows"], "pg_class rows read: %v", plan)

	for _, c := range []struct {
		schema, table string
		want          bool
	}{{last, "goose_db_version", true}, {"t1", "goose_db_version", true}, {"t1", "other", false},
		{"v", "goose_db_version", false}, {"e", "goose_db_version", false}, {"missing", "goose_db_version", false}} {
		got, err := versionTableExists(ctx, conn.QueryRow, VersionTable{Schema: c.schema, Name: c.table})
		require.NoError(t, err)
		require.Equal(t, c.want, got, "%s.%s", c.schema, c.table)
		require.Equal(t, tableExists(t, conn, c.schema, c.table), got, "as pg_tables: %s.%s", c.schema, c.table)
	}
}
