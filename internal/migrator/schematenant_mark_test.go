package migrator

import (
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// requireMarked fails unless schema.table carries schema tenant schema's mark.
func requireMarked(t testing.TB, conn *pgx.Conn, schema, table string, msgAndArgs ...any) {
	t.Helper()
	c, ok := versionTableComment(t, conn, schema, table)
	require.True(t, ok, msgAndArgs...)
	require.Equal(t, schemaTenantMark(schema), c, msgAndArgs...)
}

// versionTableComment returns the comment of schema.table, and whether the table has one.
func versionTableComment(t testing.TB, conn *pgx.Conn, schema, table string) (string, bool) {
	t.Helper()
	var comment *string
	require.NoError(t, conn.QueryRow(t.Context(),
		`SELECT obj_description(to_regclass($1), 'pg_class')`, pgx.Identifier{schema, table}.Sanitize()).Scan(&comment))
	if comment == nil {
		return "", false
	}
	return *comment, true
}

var markFiles = map[string]string{
	"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
	"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n",
}

func markFilesWith3() map[string]string {
	files := map[string]string{"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n"}
	for k, v := range markFiles {
		files[k] = v
	}
	return files
}

// TestSchemaTenantVersionTableIsMarked: every way tenantmigrate gives a schema tenant its
// version table marks it as the schema tenant's (goose in both transaction modes, force on a new
// schema, golang-migrate sources); a database tenant's table is not marked.
func TestSchemaTenantVersionTableIsMarked(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)

	_, err := newMigrator(t, Config{FS: sqlFS(markFiles)}).Migrate(ctx, Target{DatabaseURL: dbURL, Schema: "file_mode"})
	require.NoError(t, err)
	_, err = newMigrator(t, Config{FS: sqlFS(markFiles), TransactionMode: TransactionModeTenant}).Migrate(ctx, Target{DatabaseURL: dbURL, Schema: "tenant_mode"})
	require.NoError(t, err)
	_, err = newMigrator(t, Config{FS: sqlFS(markFiles)}).Force(ctx, Target{DatabaseURL: dbURL, Schema: "forced"}, 1)
	require.NoError(t, err)
	for _, schema := range []string{"file_mode", "tenant_mode", "forced"} {
		comment, ok := versionTableComment(t, conn, schema, "goose_db_version")
		require.True(t, ok, schema)
		require.Equal(t, "tenantmigrate: version table of schema tenant "+schema, comment)
	}

	gm := newMigrator(t, Config{FS: os.DirFS(gmDir(t, 3, nil))})
	_, err = gm.Migrate(ctx, Target{DatabaseURL: dbURL, Schema: "gm_tenant"})
	require.NoError(t, err)
	_, err = gm.Force(ctx, Target{DatabaseURL: dbURL, Schema: "gm_forced"}, 2)
	require.NoError(t, err)
	for _, schema := range []string{"gm_tenant", "gm_forced"} {
		comment, ok := versionTableComment(t, conn, schema, "schema_migrations")
		require.True(t, ok, schema)
		require.Equal(t, "tenantmigrate: version table of schema tenant "+schema, comment)
	}

	dbTenant := newTestDB(t)
	_, err = newMigrator(t, Config{FS: sqlFS(markFiles)}).Migrate(ctx, Target{DatabaseURL: dbTenant})
	require.NoError(t, err)
	_, ok := versionTableComment(t, connect(t, dbTenant), "public", "goose_db_version")
	require.False(t, ok, "a database tenant's table carries no mark")
}

// TestDatabaseTargetRefusesSchemaTenantsTable: a database target on a database holding a
// schema tenant's version table is refused by every operation, with nothing applied and the
// schema tenant left as it was, configured table or not, and also when the database holds a
// table of its own beside it. Without the mark the database target took acme's table for its
// own: Migrate applied version 3 into public and recorded it in acme's table.
func TestDatabaseTargetRefusesSchemaTenantsTable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	acme := Target{DatabaseURL: dbURL, Schema: "acme"}
	_, err := newMigrator(t, Config{FS: sqlFS(markFiles)}).Migrate(ctx, acme)
	require.NoError(t, err)

	m := newMigrator(t, Config{FS: sqlFS(markFilesWith3())})
	target := Target{DatabaseURL: dbURL}
	requireRefused := func(t *testing.T, err error, found ...VersionTable) {
		t.Helper()
		require.ErrorIs(t, err, ErrVersionTableConflict)
		var conflict *VersionTableConflictError
		require.ErrorAs(t, err, &conflict)
		require.Equal(t, []VersionTable{{"acme", "goose_db_version"}}, conflict.SchemaTenants)
		require.Equal(t, found, conflict.Found)
		require.Contains(t, err.Error(), `schema tenant acme`)
		require.Contains(t, err.Error(), `"acme"."goose_db_version"`)
		require.Contains(t, err.Error(), "register this tenant with its own database or schema")
		require.False(t, IsRetryable(err))
	}

	res, err := m.Migrate(ctx, target)
	requireRefused(t, err)
	require.Contains(t, err.Error(), "the database's only goose_db_version is schema tenant acme's")
	require.Empty(t, res.Applied)
	_, _, err = m.Pending(ctx, target)
	requireRefused(t, err)
	_, err = m.Applied(ctx, target)
	requireRefused(t, err)
	in, err := m.Inspect(ctx, target)
	require.NoError(t, err)
	require.NotNil(t, in.Conflict)
	require.Equal(t, []VersionTable{{"acme", "goose_db_version"}}, in.Conflict.SchemaTenants)
	_, err = m.Force(ctx, target, 3)
	requireRefused(t, err)
	_, err = m.Down(ctx, target, 1)
	requireRefused(t, err)

	for _, configured := range []VersionTable{{"public", "goose_db_version"}, {"acme", "goose_db_version"}} {
		_, err = newMigrator(t, Config{FS: sqlFS(markFilesWith3()), VersionTable: &configured}).Migrate(ctx, target)
		requireRefused(t, err)
	}

	require.False(t, tableExists(t, conn, "public", "a"), "nothing applied to the database target")
	require.False(t, tableExists(t, conn, "public", "goose_db_version"), "no table created beside acme's")
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "acme"))

	// A database tenant's own table beside acme's (the state a database tenant and a schema
	// tenant sharing a database had before: two tables) is refused too, naming both.
	exec(t, conn, `CREATE TABLE public.goose_db_version (LIKE acme.goose_db_version INCLUDING ALL)`)
	exec(t, conn, `INSERT INTO public.goose_db_version (version_id, is_applied) VALUES (0, true)`)
	_, err = m.Migrate(ctx, target)
	requireRefused(t, err, VersionTable{"public", "goose_db_version"})
	require.Contains(t, err.Error(), "the database holds the version tables of schema tenant acme")

	// The schema tenant itself goes on as before.
	res, err = m.Migrate(ctx, acme)
	require.NoError(t, err)
	require.Equal(t, []int64{3}, res.Applied)
	require.True(t, tableExists(t, conn, "acme", "c"))
}

// TestDatabaseTargetRefusesGolangMigrateSchemaTenantsTable is the refusal for golang-migrate
// sources, whose database targets adopt the one schema_migrations found as goose's adopt
// goose_db_version.
func TestDatabaseTargetRefusesGolangMigrateSchemaTenantsTable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	_, err := newMigrator(t, Config{FS: os.DirFS(gmDir(t, 3, nil))}).Migrate(ctx, Target{DatabaseURL: dbURL, Schema: "acme"})
	require.NoError(t, err)

	m := newMigrator(t, Config{FS: os.DirFS(gmDir(t, 6, nil))})
	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.ErrorIs(t, err, ErrVersionTableConflict)
	require.Contains(t, err.Error(), `the database's only schema_migrations is schema tenant acme's ("acme"."schema_migrations")`)
	require.Empty(t, res.Applied)
	in, err := m.Inspect(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.NotNil(t, in.Conflict)
	_, err = m.Force(ctx, Target{DatabaseURL: dbURL}, 6)
	require.ErrorIs(t, err, ErrVersionTableConflict)
	require.False(t, tableExists(t, conn, "public", "users"))
	require.False(t, tableExists(t, conn, "public", "schema_migrations"))
	var version int64
	require.NoError(t, conn.QueryRow(ctx, `SELECT version FROM acme.schema_migrations`).Scan(&version))
	require.Equal(t, int64(3), version)
}

// TestSchemaTenantTableFromBeforeTheMarkIsMarked: a schema tenant whose table was created
// before tenantmigrate marked them (or by plain goose or golang-migrate) gets the mark on its
// next run, also one with nothing to apply, and from then on a database target is refused;
// a run with the mark already there issues no COMMENT. A foreign comment is replaced.
func TestSchemaTenantTableFromBeforeTheMarkIsMarked(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	acme := Target{DatabaseURL: dbURL, Schema: "acme"}
	m := newMigrator(t, Config{FS: sqlFS(markFiles)})
	_, err := m.Migrate(ctx, acme)
	require.NoError(t, err)
	exec(t, conn, `COMMENT ON TABLE acme.goose_db_version IS NULL`) // as an older release left it

	res, err := m.Migrate(ctx, acme)
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	comment, ok := versionTableComment(t, conn, "acme", "goose_db_version")
	require.True(t, ok, "marked by a run with nothing to apply")
	require.Equal(t, "tenantmigrate: version table of schema tenant acme", comment)
	_, err = m.Migrate(ctx, Target{DatabaseURL: dbURL})
	require.ErrorIs(t, err, ErrVersionTableConflict)

	// A marked table is not marked again: the mark's transaction id stays.
	xmin := func() string {
		var x string
		require.NoError(t, conn.QueryRow(ctx, `SELECT xmin::text FROM pg_description
			WHERE objoid = 'acme.goose_db_version'::regclass AND classoid = 'pg_class'::regclass AND objsubid = 0`).Scan(&x))
		return x
	}
	before := xmin()
	_, err = m.Migrate(ctx, acme)
	require.NoError(t, err)
	require.Equal(t, before, xmin(), "a marked table is not commented again")

	exec(t, conn, `COMMENT ON TABLE acme.goose_db_version IS 'something else'`)
	_, err = m.Migrate(ctx, acme)
	require.NoError(t, err)
	comment, _ = versionTableComment(t, conn, "acme", "goose_db_version")
	require.Equal(t, "tenantmigrate: version table of schema tenant acme", comment)
}

// TestUnmarkableSchemaTenantTableStillMigrates: a schema tenant whose version table belongs
// to another role (COMMENT needs ownership) is migrated as before; the failure to mark it is
// logged once per process and not tried again.
func TestUnmarkableSchemaTenantTableStillMigrates(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, admin, role, roleURL := newLoginRole(t)
	exec(t, admin, `CREATE SCHEMA acme AUTHORIZATION `+role)
	exec(t, admin, `CREATE TABLE acme.goose_db_version (id integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
		version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp NOT NULL DEFAULT now())`)
	exec(t, admin, `INSERT INTO acme.goose_db_version (version_id, is_applied) VALUES (0, true)`)
	exec(t, admin, `GRANT ALL ON acme.goose_db_version TO `+role)

	logs := &logCapture{}
	m := newMigrator(t, Config{FS: sqlFS(markFiles), Logger: logs.logger()})
	target := Target{DatabaseURL: roleURL, Schema: "acme"}
	res, err := m.Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, res.Applied)
	_, err = m.Migrate(ctx, target)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(logs.String(), "could not mark the version table"), logs.String())
	_, ok := versionTableComment(t, admin, "acme", "goose_db_version")
	require.False(t, ok)
}

// TestMarkStatementQuotes: the mark's literal survives quotes and backslashes in a schema name.
func TestMarkStatementQuotes(t *testing.T) {
	t.Parallel()
	conn := connect(t, newTestDB(t))
	schema := `o'x\y`
	exec(t, conn, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize())
	exec(t, conn, `CREATE TABLE `+pgx.Identifier{schema, "t"}.Sanitize()+` (id int)`)
	exec(t, conn, markStatement(VersionTable{Schema: schema, Name: "t"}, schema))
	requireMarked(t, conn, schema, "t")
}

// TestEnsureSchemaQueryFindsOneRowAmongManySchemas: the query every schema tenant's run starts
// with reads the one pg_class row of its version table, through both keys of
// pg_class_relname_nsp_index, in a database of 300 schema tenants whose pg_class was never
// analyzed, and answers for a missing schema, a missing table, a table without comment and a
// marked one.
func TestEnsureSchemaQueryFindsOneRowAmongManySchemas(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	conn := connect(t, newTestDB(t))
	const schemas = 300
	exec(t, conn, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP
		EXECUTE format('CREATE SCHEMA t%%s; CREATE TABLE t%%s.goose_db_version (id int PRIMARY KEY)', i, i);
	END LOOP; END $$`, schemas))
	exec(t, conn, `CREATE SCHEMA e`)
	last := fmt.Sprintf("t%d", schemas)
	exec(t, conn, markStatement(VersionTable{Schema: last, Name: "goose_db_version"}, last))

	var plan []map[string]any
	require.NoError(t, conn.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+ensureSchemaQuery,
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
		schema  string
		exists  bool
		comment *string
	}{
		{"missing", false, nil},
		{"e", true, nil},
		{"t1", true, ptr("")},
		{last, true, ptr(schemaTenantMark(last))},
	} {
		var exists bool
		var comment *string
		require.NoError(t, conn.QueryRow(ctx, ensureSchemaQuery, c.schema, "goose_db_version").Scan(&exists, &comment))
		require.Equal(t, c.exists, exists, c.schema)
		require.Equal(t, c.comment, comment, c.schema)
	}
}

func ptr[T any](v T) *T { return &v }

// The mark's text is the one the README documents.
func TestSchemaTenantMarkText(t *testing.T) {
	t.Parallel()
	require.Equal(t, "tenantmigrate: version table of schema tenant acme", schemaTenantMark("acme"))
	require.True(t, strings.HasPrefix(schemaTenantMark("x"), schemaTenantMarkPrefix))
}

// TestCreateVersionTableMarksInOneQuery: a schema tenant's new version table is created and
// marked by one query (no round trip for the mark); a database target's is goose's statement
// alone.
func TestCreateVersionTableMarksInOneQuery(t *testing.T) {
	t.Parallel()
	for _, schema := range []string{"acme", ""} {
		table := VersionTable{Schema: "acme", Name: "goose_db_version"}
		if schema == "" {
			table.Schema = "public"
		}
		store, err := newTableStore(table, schema)
		require.NoError(t, err)
		rec := &recording{}
		db := sql.OpenDB(recordingConnector{rec: rec})
		require.NoError(t, store.CreateVersionTable(t.Context(), db))
		require.NoError(t, db.Close())
		require.Len(t, rec.statements, 1, schema)
		require.Contains(t, rec.statements[0], "CREATE TABLE "+table.String())
		if schema == "" {
			require.NotContains(t, rec.statements[0], "COMMENT")
			continue
		}
		require.True(t, strings.HasSuffix(rec.statements[0], ";\n"+markStatement(table, schema)), rec.statements[0])
	}
}
