package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// This file holds the pieces of the model-based test (model_test.go): the
// migration sources it releases, the targets tenants live in, and the
// readers and invariants it checks after every step.

// modelVersionStep separates the versions of in-order releases (10, 20,
// 30, ...); out-of-order releases take a version between two of them (25).
const modelVersionStep = 10

// modelMigration is the goose file of version v. Each version creates a table
// of its own without IF NOT EXISTS and logs itself in model_log (created by
// the first version, 10), so applying a version twice either fails the run or
// shows as two log rows; the short sleep widens the window in which a kill,
// a signal or an outage lands inside a migration.
func modelMigration(v int64) (name, body string) {
	var b strings.Builder
	b.WriteString("-- +goose Up\n")
	if v == modelVersionStep {
		b.WriteString("CREATE TABLE model_log (version bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp());\n")
	}
	fmt.Fprintf(&b, "CREATE TABLE m_%d (id int);\n", v)
	fmt.Fprintf(&b, "INSERT INTO model_log (version) VALUES (%d);\n", v)
	b.WriteString("SELECT pg_sleep(0.05);\n")
	return fmt.Sprintf("%05d_m%d.sql", v, v), b.String()
}

// modelSource is one release: a directory of goose files, the same bytes for
// a version in every release (the control plane records their checksums).
type modelSource struct {
	dir      string
	versions []int64 // ascending
}

func (s modelSource) latest() int64 { return s.versions[len(s.versions)-1] }

// writeModelSource writes a new release holding versions.
func writeModelSource(t *testing.T, versions []int64) modelSource {
	t.Helper()
	versions = slices.Sorted(slices.Values(versions))
	dir := t.TempDir()
	for _, v := range versions {
		name, body := modelMigration(v)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600))
	}
	return modelSource{dir: dir, versions: versions}
}

// modelTarget is a place a tenant can live: a whole database (schema "") or
// one schema of a database.
type modelTarget struct {
	url, db, schema string
	name            string // short, for messages: db2, db4/s_4_0
}

func (tg modelTarget) String() string { return tg.name }

// targetContent is what a target holds.
type targetContent struct {
	// tables are the schemas holding a goose_db_version table (database
	// targets: any schema; schema targets: the tenant schema only).
	tables []string
	// applied counts the rows per version (> 0) of the version table.
	applied map[int64]int
	// logged counts the model_log rows per version.
	logged map[int64]int
}

// versions returns the versions applied, ascending.
func (c targetContent) versions() []int64 {
	return slices.Sorted(maps.Keys(c.applied))
}

// readTarget reads the version table and model_log of tg over conn, a
// connection to its database, in one snapshot: a migration committing
// between two reads would otherwise show in one table and not the other.
func readTarget(ctx context.Context, conn *pgx.Conn, tg modelTarget) (targetContent, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return targetContent{}, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	return readTargetTx(ctx, tx, tg)
}

func readTargetTx(ctx context.Context, conn pgx.Tx, tg modelTarget) (targetContent, error) {
	c := targetContent{applied: map[int64]int{}, logged: map[int64]int{}}
	q := `SELECT n.nspname FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
		WHERE r.relname = 'goose_db_version' AND r.relkind IN ('r', 'p')`
	args := []any{}
	if tg.schema != "" {
		q += " AND n.nspname = $1"
		args = append(args, tg.schema)
	}
	rows, err := conn.Query(ctx, q+" ORDER BY 1", args...)
	if err != nil {
		return c, err
	}
	if c.tables, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return c, err
	}
	if len(c.tables) != 1 {
		return c, nil
	}
	schema := c.tables[0]
	count := func(sql string, into map[int64]int) error {
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			return err
		}
		var v int64
		var n int
		_, err = pgx.ForEachRow(rows, []any{&v, &n}, func() error { into[v] = n; return nil })
		return err
	}
	if err := count("SELECT version_id, count(*)::int FROM "+pgx.Identifier{schema, "goose_db_version"}.Sanitize()+
		" WHERE version_id > 0 GROUP BY 1", c.applied); err != nil {
		return c, err
	}
	var hasLog bool
	logTable := pgx.Identifier{schema, "model_log"}.Sanitize()
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", logTable).Scan(&hasLog); err != nil {
		return c, err
	}
	if hasLog {
		if err := count("SELECT version, count(*)::int FROM "+logTable+" GROUP BY 1", c.logged); err != nil {
			return c, err
		}
	}
	return c, nil
}

// readTargets reads every target, one connection per database.
func readTargets(t *testing.T, targets []modelTarget) map[modelTarget]targetContent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.WithoutCancel(ctx))
		}
	}()
	out := make(map[modelTarget]targetContent, len(targets))
	for _, tg := range targets {
		conn := conns[tg.url]
		if conn == nil {
			var err error
			conn, err = pgx.Connect(ctx, tg.url)
			require.NoError(t, err)
			conns[tg.url] = conn
		}
		c, err := readTarget(ctx, conn, tg)
		require.NoError(t, err, "read target %s", tg)
		out[tg] = c
	}
	return out
}

// cpRow is a tenant's row in the control plane, as the model checks it.
type cpRow struct {
	version   *int64
	status    *string
	lastError *string
}

func (r cpRow) String() string {
	return cpTenant{Version: r.version, Status: r.status}.String()
}

// readControlPlane reads every tenant's version, status and last error.
func readControlPlane(t *testing.T, cp *pgxpool.Pool) map[string]cpRow {
	t.Helper()
	rows, err := cp.Query(t.Context(), "SELECT id, migrations_version, migrations_status, last_error FROM tenantmigrate.tenants")
	require.NoError(t, err)
	out := map[string]cpRow{}
	var id string
	var r cpRow
	_, err = pgx.ForEachRow(rows, []any{&id, &r.version, &r.status, &r.lastError}, func() error {
		out[id] = r
		return nil
	})
	require.NoError(t, err)
	return out
}

// checkTarget returns what is wrong with the content of a target whatever
// the control plane says: more than one version table, a version applied
// twice, the version table and model_log disagreeing (a migration's effects
// without its version row, or the reverse), a version no release adopted.
func checkTarget(tg modelTarget, c targetContent, adopted map[int64]bool) []string {
	var bad []string
	if len(c.tables) > 1 {
		bad = append(bad, fmt.Sprintf("target %s has %d version tables: %v", tg, len(c.tables), c.tables))
	}
	for v, n := range c.applied {
		if n != 1 {
			bad = append(bad, fmt.Sprintf("target %s: version %d recorded %d times in goose_db_version", tg, v, n))
		}
		if !adopted[v] {
			bad = append(bad, fmt.Sprintf("target %s: version %d applied, but no adopted release has it", tg, v))
		}
	}
	if !maps.Equal(c.applied, c.logged) {
		bad = append(bad, fmt.Sprintf("target %s: goose_db_version %v, model_log %v (version -> rows)", tg, c.applied, c.logged))
	}
	return bad
}

// checkTenant returns what is wrong between a tenant's control-plane row and
// its target's content, given src, the current release. These hold at any
// moment, runs in flight included: a run commits each version in the tenant
// before it records anything, so the tenant may hold more than recorded,
// never less.
//   - A version recorded (any status) is a version the tenant has.
//   - COMPLETED at V: the tenant holds exactly the release's versions up to
//     V, no fewer, none else below V.
func checkTenant(id string, tg modelTarget, row cpRow, c targetContent, src modelSource) []string {
	if row.version == nil || *row.version == 0 {
		return nil
	}
	v := *row.version
	var bad []string
	if c.applied[v] == 0 {
		bad = append(bad, fmt.Sprintf("tenant %s on %s: control plane records %s, the tenant's versions are %v", id, tg, row, c.versions()))
	}
	if row.status != nil && *row.status == "COMPLETED" {
		var want, got []int64
		for _, sv := range src.versions {
			if sv <= v {
				want = append(want, sv)
			}
		}
		for _, tv := range c.versions() {
			if tv <= v {
				got = append(got, tv)
			}
		}
		if !slices.Equal(want, got) {
			bad = append(bad, fmt.Sprintf("tenant %s on %s: COMPLETED at %d, release has %v up to it, the tenant %v", id, tg, v, want, got))
		}
	}
	return bad
}

// outOfOrder returns the versions of src a start must refuse without
// --allow-missing: below the highest version ever applied to any target,
// and applied to none.
func outOfOrder(src modelSource, everApplied map[int64]bool) []int64 {
	var above int64
	for v := range everApplied {
		above = max(above, v)
	}
	var missing []int64
	for _, v := range src.versions {
		if v < above && !everApplied[v] {
			missing = append(missing, v)
		}
	}
	return missing
}

// listeners counts the control-plane sessions of the tenantmigrate listener.
func listeners(t *testing.T, cpServer *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, cpServer.QueryRow(t.Context(),
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tenantmigrate-listener'").Scan(&n))
	return n
}

// TestModelInvariantsCatchBrokenStates feeds the model's checks states that
// break each invariant, so that TestModel can fail: a version applied twice,
// a second version table, a migration's effects without its version row, a
// version no release has, a recorded version the tenant lacks, COMPLETED
// without a version of the release; and a state in flight that is fine.
func TestModelInvariantsCatchBrokenStates(t *testing.T) {
	t.Parallel()
	tg := modelTarget{name: "db0"}
	src := modelSource{versions: []int64{10, 20, 25, 30}}
	adopted := map[int64]bool{10: true, 20: true, 25: true, 30: true}
	content := func(counts map[int64]int) targetContent {
		return targetContent{tables: []string{"public"}, applied: counts, logged: maps.Clone(counts)}
	}
	completed, failed := "COMPLETED", "FAILED"
	at := func(v int64, status *string) cpRow { return cpRow{version: &v, status: status} }

	good := content(map[int64]int{10: 1, 20: 1, 25: 1, 30: 1})
	require.Empty(t, checkTarget(tg, good, adopted))
	require.Empty(t, checkTenant("a", tg, at(30, &completed), good, src))
	// In flight: the tenant holds more than recorded.
	require.Empty(t, checkTenant("a", tg, at(20, &completed), good, src))
	require.Empty(t, checkTenant("a", tg, cpRow{}, good, src))

	twice := content(map[int64]int{10: 1, 20: 2})
	require.Len(t, checkTarget(tg, twice, adopted), 1)
	two := good
	two.tables = []string{"app", "public"}
	require.Len(t, checkTarget(tg, two, adopted), 1)
	noRow := good
	noRow.logged = map[int64]int{10: 1, 20: 1, 25: 1, 30: 1, 40: 1}
	require.Len(t, checkTarget(tg, noRow, adopted), 1)
	require.Len(t, checkTarget(tg, content(map[int64]int{10: 1, 35: 1}), adopted), 1)

	behind := content(map[int64]int{10: 1, 20: 1})
	require.Len(t, checkTenant("a", tg, at(30, &failed), behind, src), 1, "recorded a version the tenant lacks")
	lacking := content(map[int64]int{10: 1, 20: 1, 30: 1})
	require.Len(t, checkTenant("a", tg, at(30, &completed), lacking, src), 1, "COMPLETED without 25")
	require.Empty(t, checkTenant("a", tg, at(30, &failed), lacking, src), "FAILED at 30 lacking 25 (marked by --allow-missing)")
}
