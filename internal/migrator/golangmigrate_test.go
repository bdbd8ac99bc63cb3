package migrator

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	gmpostgres "github.com/golang-migrate/migrate/v4/database/postgres"
	_ "github.com/golang-migrate/migrate/v4/source/file" // file:// sources for golang-migrate
	_ "github.com/lib/pq"                                // golang-migrate's postgres driver is built on it
	"github.com/stretchr/testify/require"
)

// gmFiles is a golang-migrate source of six versions, up and down files. Version 4 is one
// CREATE INDEX CONCURRENTLY (a file golang-migrate runs outside any transaction), 5 several
// statements, 6 its own BEGIN/COMMIT.
var gmFiles = map[string]string{
	"1_create_users.up.sql":    "CREATE TABLE users (id int PRIMARY KEY);",
	"1_create_users.down.sql":  "DROP TABLE users;",
	"2_add_email.up.sql":       "ALTER TABLE users ADD COLUMN email text;",
	"2_add_email.down.sql":     "ALTER TABLE users DROP COLUMN email;",
	"3_create_orders.up.sql":   "CREATE TABLE orders (id int PRIMARY KEY, user_id int);",
	"3_create_orders.down.sql": "DROP TABLE orders;",
	"4_index_email.up.sql":     "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
	"4_index_email.down.sql":   "DROP INDEX CONCURRENTLY users_email_idx;",
	"5_plans.up.sql":           "CREATE TABLE plans (id int PRIMARY KEY);\nINSERT INTO plans VALUES (1), (2);\n",
	"6_order_total.up.sql":     "BEGIN;\nALTER TABLE orders ADD COLUMN total int;\nCOMMIT;\n",
}

// gmDir writes the files of gmFiles up to version upTo into a new directory, with the
// replacements applied, and returns it.
func gmDir(t *testing.T, upTo int64, replace map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range gmFiles {
		v, err := strconv.ParseInt(name[:strings.IndexByte(name, '_')], 10, 64)
		require.NoError(t, err)
		if v > upTo {
			continue
		}
		if r, ok := replace[name]; ok {
			data = r
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600))
	}
	return dir
}

// gmURL is dbURL as golang-migrate's postgres driver (lib/pq) wants it, with params added.
func gmURL(t *testing.T, dbURL string, params map[string]string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	if q.Get("sslmode") == "" {
		q.Set("sslmode", "disable")
	}
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// golangMigrate returns golang-migrate itself on dir and the database at gmurl, as its CLI opens
// them.
func golangMigrate(t *testing.T, dir, gmurl string) *migrate.Migrate {
	t.Helper()
	gm, err := migrate.New("file://"+dir, gmurl)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = gm.Close() })
	return gm
}

// gmVersion is golang-migrate's Version of the database.
func gmVersion(t *testing.T, dir, gmurl string) (uint, bool) {
	t.Helper()
	v, dirty, err := golangMigrate(t, dir, gmurl).Version()
	require.NoError(t, err)
	return v, dirty
}

func TestGolangMigrateAdoptsFleetAt3(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	gmurl := gmURL(t, dbURL, nil)

	// A tenant golang-migrate took to 3.
	require.NoError(t, golangMigrate(t, gmDir(t, 3, nil), gmurl).Up())

	dir := gmDir(t, 6, nil)
	m := newMigrator(t, Config{FS: os.DirFS(dir)})
	require.Equal(t, FormatGolangMigrate, m.Format())
	require.Equal(t, []int64{1, 2, 3, 4, 5, 6}, m.Versions())
	migs := m.Migrations()
	require.Equal(t, "1_create_users.up.sql", migs[0].Name)
	require.Equal(t, "1_create_users.down.sql", migs[0].DownName)
	require.Equal(t, sqlChecksum([]byte(gmFiles["1_create_users.up.sql"])), migs[0].Checksum)
	require.Empty(t, migs[4].DownName)

	tgt := Target{DatabaseURL: dbURL}
	current, pending, err := m.Pending(t.Context(), tgt)
	require.NoError(t, err)
	require.Equal(t, int64(3), current)
	require.Equal(t, []int64{4, 5, 6}, pending)

	res, err := m.Migrate(t.Context(), tgt)
	require.NoError(t, err)
	require.Equal(t, []int64{4, 5, 6}, res.Applied)
	require.Equal(t, int64(6), res.Version)

	// golang-migrate sees 6, clean, and has nothing left to do.
	v, dirty := gmVersion(t, dir, gmurl)
	require.Equal(t, uint(6), v)
	require.False(t, dirty)
	require.ErrorIs(t, golangMigrate(t, dir, gmurl).Up(), migrate.ErrNoChange)

	// The migrations did run: a valid index, rows, a column.
	conn := connect(t, dbURL)
	require.True(t, queryBool(t, conn, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email_idx'::regclass`))
	require.True(t, queryBool(t, conn, `SELECT count(*) = 2 FROM plans`))
	require.True(t, queryBool(t, conn, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'total')`))
	require.True(t, queryBool(t, conn, `SELECT count(*) = 1 FROM public.schema_migrations`))
	require.False(t, tableExists(t, conn, "public", "goose_db_version"))

	in, err := m.Inspect(t.Context(), tgt)
	require.NoError(t, err)
	require.Equal(t, VersionTable{Schema: "public", Name: "schema_migrations"}, in.Table)
	require.True(t, in.Exists)
	require.False(t, in.Dirty)
	require.Equal(t, []int64{1, 2, 3, 4, 5, 6}, in.Applied)

	// A second run finds nothing to do.
	res, err = m.Migrate(t.Context(), tgt)
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	require.Equal(t, int64(6), res.Version)
}

func TestGolangMigrateNewTenant(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	dir := gmDir(t, 6, nil)
	m := newMigrator(t, Config{FS: os.DirFS(dir)})

	in, err := m.Inspect(t.Context(), Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.False(t, in.Exists)
	require.Empty(t, in.Applied)

	res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3, 4, 5, 6}, res.Applied)
	v, dirty := gmVersion(t, dir, gmURL(t, dbURL, nil))
	require.Equal(t, uint(6), v)
	require.False(t, dirty)
}

func TestGolangMigrateDirtyTenantLeftAlone(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	gmurl := gmURL(t, dbURL, nil)

	// golang-migrate fails on version 4 and leaves the tenant dirty at 4.
	bad := gmDir(t, 4, map[string]string{"4_index_email.up.sql": "SELECT * FROM no_such_table;"})
	require.Error(t, golangMigrate(t, bad, gmurl).Up())
	v, dirty := gmVersion(t, bad, gmurl)
	require.Equal(t, uint(4), v)
	require.True(t, dirty)

	m := newMigrator(t, Config{FS: os.DirFS(gmDir(t, 6, nil))})
	tgt := Target{DatabaseURL: dbURL}
	res, err := m.Migrate(t.Context(), tgt)
	require.ErrorIs(t, err, ErrDirty)
	var dirtyErr *DirtyError
	require.ErrorAs(t, err, &dirtyErr)
	require.Equal(t, int64(4), dirtyErr.Version)
	require.Contains(t, err.Error(), "dirty at version 4: fix it, then `tenantmigrate force`")
	require.Contains(t, err.Error(), "`migrate force 4`")
	require.False(t, IsRetryable(err))
	require.Empty(t, res.Applied)
	require.Equal(t, int64(3), res.Version, "the last version applied whole")

	_, _, err = m.Pending(t.Context(), tgt)
	require.ErrorIs(t, err, ErrDirty)
	in, err := m.Inspect(t.Context(), tgt)
	require.NoError(t, err)
	require.True(t, in.Dirty)
	require.Equal(t, int64(4), in.DirtyVersion)
	require.Equal(t, []int64{1, 2, 3}, in.Applied)

	// Nothing was applied and the flag is still golang-migrate's.
	conn := connect(t, dbURL)
	require.False(t, tableExists(t, conn, "public", "plans"))
	v, dirty = gmVersion(t, bad, gmurl)
	require.Equal(t, uint(4), v)
	require.True(t, dirty)
}

func TestGolangMigrateFailureLeavesTenantDirty(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	gmurl := gmURL(t, dbURL, nil)
	dir := gmDir(t, 6, map[string]string{"5_plans.up.sql": "CREATE TABLE plans (id int PRIMARY KEY);\nSELECT * FROM no_such_table;\n"})

	m := newMigrator(t, Config{FS: os.DirFS(dir)})
	res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
	var applyErr *ApplyError
	require.ErrorAs(t, err, &applyErr)
	require.Equal(t, int64(5), applyErr.Version)
	require.Equal(t, "5_plans.up.sql", applyErr.Name)
	require.ErrorIs(t, err, ErrDirty)
	require.False(t, IsRetryable(err))
	require.Equal(t, []int64{1, 2, 3, 4}, res.Applied)
	require.Equal(t, int64(4), res.Version)

	// golang-migrate sees the crash too, and refuses to go on.
	v, dirty := gmVersion(t, dir, gmurl)
	require.Equal(t, uint(5), v)
	require.True(t, dirty)
	var gmDirty migrate.ErrDirty
	require.ErrorAs(t, golangMigrate(t, dir, gmurl).Up(), &gmDirty)
	// The file ran as one implicit transaction: its first statement did not stay.
	require.False(t, tableExists(t, connect(t, dbURL), "public", "plans"))
}

func TestGolangMigrateSchemaPerTenant(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	exec(t, conn, `CREATE SCHEMA tenant_a; CREATE SCHEMA tenant_b`)

	// Two ways golang-migrate users point it at a tenant schema: search_path alone, or
	// search_path and a quoted x-migrations-table.
	urlA := gmURL(t, dbURL, map[string]string{"search_path": "tenant_a"})
	urlB := gmURL(t, dbURL, map[string]string{
		"search_path":               "tenant_b",
		"x-migrations-table":        `"tenant_b"."schema_migrations"`,
		"x-migrations-table-quoted": "1",
	})
	require.NoError(t, golangMigrate(t, gmDir(t, 3, nil), urlA).Up())
	require.NoError(t, golangMigrate(t, gmDir(t, 3, nil), urlB).Up())

	dir := gmDir(t, 6, nil)
	m := newMigrator(t, Config{FS: os.DirFS(dir)})
	for _, schema := range []string{"tenant_a", "tenant_b"} {
		res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: schema})
		require.NoError(t, err, schema)
		require.Equal(t, []int64{4, 5, 6}, res.Applied, schema)
		require.True(t, tableExists(t, conn, schema, "plans"))
	}
	for _, u := range []string{urlA, urlB} {
		v, dirty := gmVersion(t, dir, u)
		require.Equal(t, uint(6), v)
		require.False(t, dirty)
		require.ErrorIs(t, golangMigrate(t, dir, u).Up(), migrate.ErrNoChange)
	}
	require.False(t, tableExists(t, conn, "public", "schema_migrations"))
	require.False(t, tableExists(t, conn, "public", "plans"))
}

func TestGolangMigrateLockKeys(t *testing.T) {
	t.Parallel()
	table := VersionTable{Schema: "tenant_a", Name: "schema_migrations"}
	keys := gmLockKeys("db1", table)
	for i, name := range []string{"/db1", "db1"} {
		want, err := database.GenerateAdvisoryLockId(name, table.Schema, table.Name)
		require.NoError(t, err)
		require.Equal(t, want, strconv.FormatInt(keys[i], 10), name)
	}
}

// TestGolangMigrateLockExcludesMigrateCLI holds golang-migrate's lock as its CLI (opened by URL)
// and as a library (WithInstance) take it: tenantmigrate waits, times out, and runs after.
func TestGolangMigrateLockExcludesMigrateCLI(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	gmurl := gmURL(t, dbURL, nil)
	dir := gmDir(t, 3, nil)
	require.NoError(t, golangMigrate(t, gmDir(t, 1, nil), gmurl).Up())

	byURL, err := (&gmpostgres.Postgres{}).Open(gmurl)
	require.NoError(t, err)
	t.Cleanup(func() { _ = byURL.Close() })
	sqlDB, err := sql.Open("postgres", gmurl)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sqlDB.Close() })
	byInstance, err := gmpostgres.WithInstance(sqlDB, &gmpostgres.Config{})
	require.NoError(t, err)

	m := newMigrator(t, Config{FS: os.DirFS(dir), LockTimeout: time.Second})
	for name, drv := range map[string]database.Driver{"url": byURL, "instance": byInstance} {
		require.NoError(t, drv.Lock(), name)
		_, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
		require.ErrorIs(t, err, ErrLockTimeout, name)
		require.True(t, IsRetryable(err))
		require.NoError(t, drv.Unlock(), name)
	}
	res, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3}, res.Applied)

	// The locks on this test's database were released. Other tests share the cluster and
	// hold advisory locks of their own, so count only this database's.
	var held int
	require.NoError(t, connect(t, dbURL).QueryRow(t.Context(),
		`SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		  WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()`).Scan(&held))
	require.Zero(t, held)
}

// TestGolangMigrateCLIWaitsForTenantmigrate is the other direction: while
// tenantmigrate applies a slow migration, golang-migrate's Lock (what its
// CLI and library take before any read) waits, and returns only after the
// run ended, when the tenant is at the new version and clean.
func TestGolangMigrateCLIWaitsForTenantmigrate(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	gmurl := gmURL(t, dbURL, nil)
	require.NoError(t, golangMigrate(t, gmDir(t, 2, nil), gmurl).Up())
	dir := gmDir(t, 3, map[string]string{
		"3_create_orders.up.sql": "SELECT pg_sleep(1.5);\nCREATE TABLE orders (id int PRIMARY KEY, user_id int);",
	})
	m := newMigrator(t, Config{FS: os.DirFS(dir)})

	done := make(chan error, 1)
	go func() {
		_, err := m.Migrate(context.Background(), Target{DatabaseURL: dbURL})
		done <- err
	}()
	// Wait until the run is inside version 3 (it holds the lock then).
	conn := connect(t, dbURL)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sleeping bool
		require.NoError(t, conn.QueryRow(t.Context(),
			`SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(1.5)%')`).Scan(&sleeping))
		if sleeping {
			break
		}
		require.True(t, time.Now().Before(deadline), "the run never reached version 3")
		time.Sleep(20 * time.Millisecond)
	}

	drv, err := (&gmpostgres.Postgres{}).Open(gmurl)
	require.NoError(t, err)
	t.Cleanup(func() { _ = drv.Close() })
	require.NoError(t, drv.Lock(), "golang-migrate's lock")
	// It got the lock: the run must have finished version 3 (mid-run, the
	// version is 3 dirty), and it returns.
	v, dirty, err := drv.Version()
	require.NoError(t, err)
	require.Equal(t, 3, v)
	require.False(t, dirty, "golang-migrate took its lock while tenantmigrate was still migrating")
	require.NoError(t, drv.Unlock())
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not return")
	}
}

func TestGolangMigrateFormatDetection(t *testing.T) {
	t.Parallel()
	gm := sqlFS(map[string]string{"1_a.up.sql": "SELECT 1;", "1_a.down.sql": "SELECT 1;"})
	goose := sqlFS(map[string]string{"00001_a.sql": "-- +goose Up\nSELECT 1;\n"})
	mixed := sqlFS(map[string]string{"1_a.up.sql": "SELECT 1;", "00002_b.sql": "-- +goose Up\nSELECT 1;\n"})

	m := newMigrator(t, Config{FS: gm})
	require.Equal(t, FormatGolangMigrate, m.Format())
	m = newMigrator(t, Config{FS: goose})
	require.Equal(t, FormatGoose, m.Format())
	m = newMigrator(t, Config{FS: gm, Format: FormatGolangMigrate})
	require.Equal(t, FormatGolangMigrate, m.Format())

	_, err := New(Config{FS: mixed})
	require.ErrorIs(t, err, ErrMixedFormats)
	require.Contains(t, err.Error(), "1_a.up.sql")
	require.Contains(t, err.Error(), "00002_b.sql")
	_, err = New(Config{FS: mixed, Format: FormatGolangMigrate})
	require.ErrorIs(t, err, ErrMixedFormats)
	_, err = New(Config{FS: goose, Format: FormatGolangMigrate})
	require.ErrorIs(t, err, ErrMixedFormats)

	_, err = New(Config{FS: sqlFS(map[string]string{"1_a.down.sql": "SELECT 1;"})})
	require.ErrorContains(t, err, "no up file")
	_, err = New(Config{FS: sqlFS(map[string]string{"1_a.up.sql": "", "01_b.up.sql": ""})})
	require.ErrorContains(t, err, "both the up migration of version 1")
	_, err = New(Config{FS: gm, Format: "flyway"})
	require.ErrorContains(t, err, "invalid migrations format")
}

// FuzzGolangMigrateSource: any set of file names and contents either loads, with versions
// ascending and each up file's checksum, or is refused with an error; never a panic.
func FuzzGolangMigrateSource(f *testing.F) {
	f.Add("1_a.up.sql", "SELECT 1;", "1_a.down.sql", "SELECT 1;")
	f.Add("1_a.up.sql", "", "00002_b.sql", "-- +goose Up\nSELECT 1;")
	f.Add("99999999999999999999_a.up.sql", "x", "2_.down.sql", "")
	f.Add("1_a.up.sql", "x", "01_b.up.sql", "y")
	f.Fuzz(func(t *testing.T, name1, data1, name2, data2 string) {
		fsys := sqlFS(map[string]string{})
		for name, data := range map[string]string{name1: data1, name2: data2} {
			if name != "" && !strings.ContainsAny(name, "/\\\x00") && name != "." && name != ".." {
				fsys[name] = &fstest.MapFile{Data: []byte(data)}
			}
		}
		m, err := New(Config{FS: fsys, Format: FormatGolangMigrate})
		if err != nil {
			return
		}
		migs := m.Migrations()
		for i, sm := range migs {
			if i > 0 && migs[i-1].Version >= sm.Version {
				t.Fatalf("versions not ascending: %v", m.Versions())
			}
			if sm.Checksum != sqlChecksum(fsys[sm.Name].Data) {
				t.Fatalf("checksum of %s is not its up file's", sm.Name)
			}
		}
	})
}
