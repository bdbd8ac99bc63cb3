package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"
)

// versionRow is a goose_db_version row without its timestamp, and the transaction that wrote
// it (xmin): rows written by one transaction share it.
type versionRow struct {
	ID        int64
	VersionID int64
	IsApplied bool
	Xmin      string
}

// versionRows returns the rows of schema's goose_db_version in id order.
func versionRows(t testing.TB, conn *pgx.Conn, schema string) []versionRow {
	t.Helper()
	rows, err := conn.Query(t.Context(), "SELECT id, version_id, is_applied, xmin::text FROM "+
		pgx.Identifier{schema, "goose_db_version"}.Sanitize()+" ORDER BY id")
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[versionRow])
	require.NoError(t, err)
	return out
}

// transactions groups the versions of rows by the transaction that wrote them, in id order:
// [[0] [1 2] [3]] means 1 and 2 were recorded in one transaction.
func transactions(rows []versionRow) [][]int64 {
	var out [][]int64
	for i, r := range rows {
		if i > 0 && rows[i-1].Xmin == r.Xmin {
			out[len(out)-1] = append(out[len(out)-1], r.VersionID)
			continue
		}
		out = append(out, []int64{r.VersionID})
	}
	return out
}

// withoutXmin returns rows as goose and `verify` see them.
func withoutXmin(rows []versionRow) []versionRow {
	out := make([]versionRow, len(rows))
	for i, r := range rows {
		r.Xmin = ""
		out[i] = r
	}
	return out
}

// mixedSource has transactional SQL files, a NO TRANSACTION file and a Go migration.
var mixedSource = map[string]string{
	"00001_a.sql":   "-- +goose Up\nCREATE TABLE a (id int PRIMARY KEY);\nINSERT INTO a VALUES (1);\n",
	"00002_b.sql":   "-- +goose Up\nCREATE TABLE b (id int REFERENCES a);\n",
	"00003_c.sql":   "-- +goose Up\n-- +goose StatementBegin\nCREATE FUNCTION c() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN RETURN 3; END;\n$$;\n-- +goose StatementEnd\n",
	"00004_idx.sql": "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY b_id_idx ON b (id);\n",
	"00005_d.sql":   "-- +goose Up\nALTER TABLE a ADD COLUMN d text;\n",
	"00006_e.sql":   "-- +goose Up\n",
	// 00007 is a Go migration.
	"00008_f.sql": "-- +goose Up\nCREATE TABLE f (id int);\n",
	"00009_g.sql": "-- +goose Up\nINSERT INTO f VALUES (9);\n",
}

func mixedGoMigration() *goose.Migration {
	return goose.NewGoMigration(7, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO a (id, d) VALUES (7, 'go')")
		return err
	}}, nil)
}

func TestTenantModeWritesGooseRowsInGroups(t *testing.T) {
	t.Parallel()
	for _, schema := range []string{"", "tenant_x"} {
		t.Run("schema="+schema, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			fileURL, tenantURL := newTestDB(t), newTestDB(t)
			tableSchema := "public"
			if schema != "" {
				tableSchema = schema
			}
			run := func(dbURL string, mode TransactionMode) []versionRow {
				m := newMigrator(t, Config{FS: sqlFS(mixedSource), GoMigrations: []*goose.Migration{mixedGoMigration()}, TransactionMode: mode})
				res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL, Schema: schema})
				require.NoError(t, err)
				require.Equal(t, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9}, res.Applied)
				require.Equal(t, int64(9), res.Version)
				conn := connect(t, dbURL)
				var n int
				require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{tableSchema, "a"}.Sanitize()+" WHERE id = 7").Scan(&n))
				require.Equal(t, 1, n, "the Go migration ran")
				require.True(t, queryBool(t, conn, `SELECT indisvalid FROM pg_index WHERE indexrelid = $1::regclass`, pgx.Identifier{tableSchema, "b_id_idx"}.Sanitize()))

				// A second run is a no-op.
				res, err = m.Migrate(ctx, Target{DatabaseURL: dbURL, Schema: schema})
				require.NoError(t, err)
				require.Empty(t, res.Applied)
				return versionRows(t, conn, tableSchema)
			}
			fileRows := run(fileURL, TransactionModeFile)
			tenantRows := run(tenantURL, TransactionModeTenant)

			// The same rows as goose writes, file by file.
			require.Equal(t, withoutXmin(fileRows), withoutXmin(tenantRows))
			require.Equal(t, [][]int64{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}}, transactions(fileRows))
			// Groups end before the NO TRANSACTION file and the Go migration, which run alone.
			require.Equal(t, [][]int64{{0}, {1, 2, 3}, {4}, {5, 6}, {7}, {8, 9}}, transactions(tenantRows))
		})
	}
}

func TestTenantModeSplitsGroupOnNewEnumValue(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	files := map[string]string{
		"00001_type.sql": "-- +goose Up\nCREATE TYPE mood AS ENUM ('ok');\nCREATE TABLE feelings (m mood);\n",
	}
	_, err := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant}).Migrate(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)

	// As Supabase Storage's 0044 -> 0045: one file adds a value, the next one uses it.
	files["00002_other.sql"] = "-- +goose Up\nCREATE TABLE other (id int);\n"
	files["00003_add_value.sql"] = "-- +goose Up\nALTER TYPE mood ADD VALUE 'happy';\n"
	files["00004_use_value.sql"] = "-- +goose Up\nINSERT INTO feelings VALUES ('happy');\n"
	files["00005_more.sql"] = "-- +goose Up\nCREATE TABLE more (id int);\n"
	res, err := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant}).Migrate(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3, 4, 5}, res.Applied)
	require.Equal(t, int64(5), res.Version)

	conn := connect(t, dbURL)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM feelings WHERE m = 'happy'").Scan(&n))
	require.Equal(t, 1, n)
	// The group 2-5 failed at 4 and was split before it: 2-3 committed, then 4-5.
	require.Equal(t, [][]int64{{0}, {1}, {2, 3}, {4, 5}}, transactions(versionRows(t, conn, "public")))
}

func TestTenantModeNewEnumValueInOneFileFails(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	exec(t, conn, "CREATE TYPE mood AS ENUM ('ok')")
	// The value is added and used in one file: goose fails on it too; no split can help.
	files := map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_b.sql": "-- +goose Up\nALTER TYPE mood ADD VALUE 'happy';\nSELECT 'happy'::mood;\n",
	}
	res, err := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant}).Migrate(ctx, Target{DatabaseURL: dbURL})
	var applyErr *ApplyError
	require.ErrorAs(t, err, &applyErr)
	require.Equal(t, int64(2), applyErr.Version)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "55P04", pgErr.Code)
	// Split before 00002: 00001 committed alone, then 00002 failed on its own.
	require.Equal(t, []int64{1}, res.Applied)
	require.Equal(t, int64(1), res.Version)
	require.Equal(t, []int64{0, 1}, appliedVersions(t, conn, "public"))
}

func TestTenantModeFailureRollsBackTheGroup(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	files := map[string]string{
		"00001_a.sql":   "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_idx.sql": "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);\n",
		"00003_b.sql":   "-- +goose Up\nCREATE TABLE b (id int);\n",
		"00004_bad.sql": "-- +goose Up\nCREATE TABLE c (id int);\nINSERT INTO nowhere VALUES (1);\n",
		"00005_d.sql":   "-- +goose Up\nCREATE TABLE d (id int);\n",
	}
	m := newMigrator(t, Config{FS: sqlFS(files), TransactionMode: TransactionModeTenant})
	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})

	var applyErr *ApplyError
	require.ErrorAs(t, err, &applyErr)
	require.Equal(t, int64(4), applyErr.Version)
	require.Equal(t, "00004_bad.sql", applyErr.Name)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "42P01", pgErr.Code) // undefined_table
	require.False(t, IsRetryable(err))

	// The group 3-5 rolled back whole: the tenant is at the version before it.
	require.Equal(t, []int64{1, 2}, res.Applied)
	require.Equal(t, int64(2), res.Version)
	conn := connect(t, dbURL)
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "public"))
	require.True(t, tableExists(t, conn, "public", "a"))
	require.False(t, tableExists(t, conn, "public", "b"))
	require.False(t, tableExists(t, conn, "public", "c"))
	current, pending, err := m.Pending(ctx, Target{DatabaseURL: dbURL})
	require.NoError(t, err)
	require.Equal(t, int64(2), current)
	require.Equal(t, []int64{3, 4, 5}, pending)
}

// blockingSource's 00002 waits for an advisory lock the test holds: the run stops mid-group.
func blockingSource(key int64) map[string]string {
	return map[string]string{
		"00001_a.sql":     "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00002_wait.sql":  fmt.Sprintf("-- +goose Up\nCREATE TABLE b (id int);\nSELECT pg_advisory_xact_lock(%d);\n", key),
		"00003_after.sql": "-- +goose Up\nCREATE TABLE c (id int);\n",
	}
}

func TestTenantModeInterruptedMidGroup(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"terminate", "cancel"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			dbURL := newTestDB(t)
			conn := connect(t, dbURL)
			holder := connect(t, dbURL)
			key := int64(0x7e57_0000) + int64(len(how))
			exec(t, holder, "SELECT pg_advisory_lock($1)", key)

			m := newMigrator(t, Config{FS: sqlFS(blockingSource(key)), TransactionMode: TransactionModeTenant, TenantLockTimeout: -1})
			runCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			type outcome struct {
				res Result
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := m.Migrate(runCtx, Target{DatabaseURL: dbURL})
				done <- outcome{res, err}
			}()

			// Wait until the run waits inside 00002, with 00001 done in the same transaction.
			var pid int32
			waitFor(t, 30*time.Second, "the run to block mid-group", func() bool {
				err := conn.QueryRow(ctx, `SELECT pid FROM pg_stat_activity
					WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'`).Scan(&pid)
				if errors.Is(err, pgx.ErrNoRows) {
					return false
				}
				require.NoError(t, err)
				return true
			})
			if how == "terminate" {
				exec(t, conn, "SELECT pg_terminate_backend($1)", pid)
			} else {
				cancel()
			}

			out := <-done
			require.Error(t, out.err)
			var applyErr *ApplyError
			require.ErrorAs(t, out.err, &applyErr)
			require.Equal(t, int64(2), applyErr.Version)
			require.Empty(t, out.res.Applied)
			// Nothing of the group 1-3 remains: the tenant is at the version before it.
			require.Equal(t, []int64{0}, appliedVersions(t, conn, "public"))
			require.False(t, tableExists(t, conn, "public", "a"))
			require.False(t, tableExists(t, conn, "public", "b"))

			// Once the lock is free, a new run applies the group.
			exec(t, holder, "SELECT pg_advisory_unlock($1)", key)
			res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL})
			require.NoError(t, err)
			require.Equal(t, []int64{1, 2, 3}, res.Applied)
			require.Equal(t, [][]int64{{0}, {1, 2, 3}}, transactions(versionRows(t, conn, "public")))
		})
	}
}

func TestParseTransactionMode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]TransactionMode{"": TransactionModeFile, "file": TransactionModeFile, "tenant": TransactionModeTenant} {
		got, err := ParseTransactionMode(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := ParseTransactionMode("database")
	require.ErrorContains(t, err, `invalid transaction mode "database"`)
	_, err = New(Config{FS: sqlFS(mixedSource), TransactionMode: "Tenant"})
	require.Error(t, err)
}

func TestTenantModeStopsAtUpTo(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: sqlFS(mixedSource), GoMigrations: []*goose.Migration{mixedGoMigration()}, TransactionMode: TransactionModeTenant})
	res, err := m.Migrate(ctx, Target{DatabaseURL: dbURL, UpTo: 2})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2}, res.Applied)
	require.Equal(t, int64(2), res.Version)
	conn := connect(t, dbURL)
	require.Equal(t, [][]int64{{0}, {1, 2}}, transactions(versionRows(t, conn, "public")))

	res, err = m.Migrate(ctx, Target{DatabaseURL: dbURL, UpTo: 2})
	require.NoError(t, err)
	require.Empty(t, res.Applied)
	require.Equal(t, int64(2), res.Version)
}
