package migrator

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// the mark is set by every mode, exec mode and with a NO TRANSACTION first file.
func TestSchemaTenantMarkEveryExecMode(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	files := map[string]string{
		"00001_a.sql": "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n",
		"00003_c.sql": "-- +goose Up\n-- +goose StatementBegin\nCREATE TABLE c (id int); CREATE TABLE d (id int);\n-- +goose StatementEnd\n",
	}
	i := 0
	for _, mode := range []string{"", "simple_protocol", "exec", "cache_describe", "describe_exec", "cache_statement"} {
		for _, tx := range []TransactionMode{TransactionModeFile, TransactionModeTenant} {
			i++
			schema := fmt.Sprintf("s%d", i)
			u := dbURL
			if mode != "" {
				u = withQuery(t, dbURL, map[string]string{"default_query_exec_mode": mode})
			}
			res, err := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: tx}).Migrate(ctx, Target{DatabaseURL: u, Schema: schema})
			require.NoError(t, err, "%s %s", mode, tx)
			require.Equal(t, []int64{1, 2, 3}, res.Applied)
			requireMarked(t, conn, schema, "goose_db_version", "%s %s", mode, tx)
			require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, conn, schema))
		}
	}
	// golang-migrate in every exec mode
	for _, mode := range []string{"simple_protocol", "exec", "cache_describe"} {
		i++
		schema := fmt.Sprintf("g%d", i)
		u := withQuery(t, dbURL, map[string]string{"default_query_exec_mode": mode})
		_, err := newMigrator(t, Config{FS: os.DirFS(gmDir(t, 3, nil))}).Migrate(ctx, Target{DatabaseURL: u, Schema: schema})
		require.NoError(t, err, mode)
		requireMarked(t, conn, schema, "schema_migrations")
	}
}

// two processes run the first run after the upgrade of the same schema tenant at once: both
// reach the COMMENT together (held behind a ShareUpdateExclusive lock), both succeed.
func TestSchemaTenantConcurrentFirstMark(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	acme := Target{DatabaseURL: dbURL, Schema: "acme"}
	_, err := newMigrator(t, Config{FS: sqlFS(markFiles)}).Migrate(ctx, acme)
	require.NoError(t, err)
	exec(t, conn, `COMMENT ON TABLE acme.goose_db_version IS NULL`)

	holder := connect(t, dbURL)
	exec(t, holder, `BEGIN`)
	exec(t, holder, `LOCK TABLE acme.goose_db_version IN SHARE UPDATE EXCLUSIVE MODE`)

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			m := newMigrator(t, Config{FS: sqlFS(markFilesWith3()), TransactionMode: []TransactionMode{TransactionModeFile, TransactionModeTenant}[i]})
			_, errs[i] = m.Migrate(ctx, acme)
		})
	}
	waitFor(t, 20*time.Second, "two COMMENTs waiting", func() bool {
		var n int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'COMMENT ON TABLE%'`).Scan(&n))
		return n == 2
	})
	exec(t, holder, `COMMIT`)
	wg.Wait()
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	requireMarked(t, conn, "acme", "goose_db_version")
	require.Equal(t, []int64{0, 1, 2, 3}, appliedVersions(t, conn, "acme"))
}

// a run in progress of the same tenant (tenant mode group, blocked mid-group) does not block
// the other's COMMENT, and no deadlock.
func TestSchemaTenantMarkBesideRunningRun(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	acme := Target{DatabaseURL: dbURL, Schema: "acme"}
	_, err := newMigrator(t, Config{FS: sqlFS(markFiles)}).Migrate(ctx, acme)
	require.NoError(t, err)
	exec(t, conn, `CREATE TABLE acme.blocker (id int)`)
	exec(t, conn, `COMMENT ON TABLE acme.goose_db_version IS NULL`)
	files := markFilesWith3()
	files["00004_d.sql"] = "-- +goose Up\nINSERT INTO blocker VALUES (1);\n"
	files["00005_e.sql"] = "-- +goose Up\nCREATE TABLE e (id int);\n"

	holder := connect(t, dbURL)
	exec(t, holder, `BEGIN`)
	exec(t, holder, `LOCK TABLE acme.blocker IN ACCESS EXCLUSIVE MODE`)

	var wg sync.WaitGroup
	var errA error
	wg.Go(func() {
		_, errA = newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant, TenantLockTimeout: 30 * time.Second}).Migrate(ctx, acme)
	})
	waitFor(t, 20*time.Second, "run A blocked mid group", func() bool {
		var n int
		require.NoError(t, conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO blocker%'`).Scan(&n))
		return n == 1
	})
	// B: marks while A holds its group; its lock wait is then bounded.
	mB := newMigrator(t, Config{FS: sqlFS(files), LockTimeout: 500 * time.Millisecond})
	_, errB := mB.Migrate(ctx, acme)
	t.Logf("B: %v", errB)
	requireMarked(t, conn, "acme", "goose_db_version")
	exec(t, holder, `COMMIT`)
	wg.Wait()
	require.NoError(t, errA)
}

// the unmarkable cache is keyed by schema name alone: a schema tenant whose table could not
// be marked in one database keeps another database's schema tenant of the same schema name
// from ever being marked in this process, and a database target there then takes its table.
func TestUnmarkableCacheIsPerDatabase(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	_, admin1, role, roleURL1 := newLoginRole(t)
	// db1: acme's version table owned by the admin (COMMENT needs ownership): unmarkable.
	exec(t, admin1, `CREATE SCHEMA acme AUTHORIZATION `+role)
	exec(t, admin1, `CREATE TABLE acme.goose_db_version (id integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
		version_id bigint NOT NULL, is_applied boolean NOT NULL, tstamp timestamp NOT NULL DEFAULT now())`)
	exec(t, admin1, `INSERT INTO acme.goose_db_version (version_id, is_applied) VALUES (0, true)`)
	exec(t, admin1, `GRANT ALL ON acme.goose_db_version TO `+role)

	// db2: another schema tenant with the same schema name, its table the tenant role's own,
	// from before the mark.
	db2 := newTestDB(t)
	admin2 := connect(t, db2)
	exec(t, admin2, "GRANT ALL ON DATABASE "+pgx.Identifier{currentDatabase(t, admin2)}.Sanitize()+" TO "+role)
	exec(t, admin2, "GRANT ALL ON SCHEMA public TO "+role)
	exec(t, admin2, `CREATE SCHEMA acme AUTHORIZATION `+role)
	roleURL2 := withUser(t, db2, role, "pw")

	m := newMigrator(t, Config{FS: sqlFS(markFiles)})
	_, err := m.Migrate(ctx, Target{DatabaseURL: roleURL2, Schema: "acme"})
	require.NoError(t, err)
	exec(t, admin2, `COMMENT ON TABLE acme.goose_db_version IS NULL`) // as an older release left it

	// One process runs both tenants, db1's first.
	m = newMigrator(t, Config{FS: sqlFS(markFiles)})
	_, err = m.Migrate(ctx, Target{DatabaseURL: roleURL1, Schema: "acme"})
	require.NoError(t, err)
	_, err = m.Migrate(ctx, Target{DatabaseURL: roleURL2, Schema: "acme"})
	require.NoError(t, err)
	// A database target on db2 must now be refused, not take acme's table.
	res, err := newMigrator(t, Config{FS: sqlFS(markFilesWith3())}).Migrate(ctx, Target{DatabaseURL: roleURL2})
	require.ErrorIs(t, err, ErrVersionTableConflict, "database target on db2 took acme's table: applied %v at %d", res.Applied, res.Version)
	_, ok := versionTableComment(t, admin2, "acme", "goose_db_version")
	require.True(t, ok, "db2's acme table, owned by the tenant role, is marked by its run")
}
