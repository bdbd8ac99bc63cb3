package tenantmigrate_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// The provisioning benchmarks (BENCHMARKS.md, "Provisioning"). They start a
// PostgreSQL of their own with fsync, synchronous_commit and
// full_page_writes on, as a production server runs (the test cluster turns
// them off), since CREATE DATABASE's cost is mostly writing and syncing
// files:
//
//	go test -run '^$' -bench 'Provision' -benchtime 20x .
//
// Every iteration creates one database, dropped after the benchmark.

// benchServer is a PostgreSQL of the benchmark's own, durable settings on.
func benchServer(b *testing.B) string {
	b.Helper()
	return pgtest.NewServer(b, map[string]string{"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}).URL("postgres")
}

// benchSource is the bench's migration set cut or extended to n migrations:
// its first n files, or all 45 and n-45 more tables with an index each.
func benchSource(b *testing.B, n int) fstest.MapFS {
	b.Helper()
	base := os.DirFS("bench/migrations")
	names, err := fs.Glob(base, "*.sql")
	require.NoError(b, err)
	out := fstest.MapFS{}
	for i, name := range names {
		if i == n {
			break
		}
		data, err := fs.ReadFile(base, name)
		require.NoError(b, err)
		out[name] = &fstest.MapFile{Data: data}
	}
	for v := len(names) + 1; v <= n; v++ {
		out[fmt.Sprintf("%05d_extra_%d.sql", v, v)] = &fstest.MapFile{Data: fmt.Appendf(nil,
			"-- +goose Up\nCREATE TABLE app.extra_%d (id bigint PRIMARY KEY, account_id bigint NOT NULL, note text);\nCREATE INDEX ON app.extra_%d (account_id);\n", v, v)}
	}
	return out
}

// benchSourceSameSchema is the 45-migration set followed by n-45 migrations
// that add no relation (a comment each): a longer history, the same files
// to copy.
func benchSourceSameSchema(b *testing.B, n int) fstest.MapFS {
	b.Helper()
	out := benchSource(b, 45)
	for v := 46; v <= n; v++ {
		out[fmt.Sprintf("%05d_comment_%d.sql", v, v)] = &fstest.MapFile{Data: fmt.Appendf(nil, "-- +goose Up\nCOMMENT ON SCHEMA app IS 'v%d';\n", v)}
	}
	return out
}

// benchProvisioner is an Orchestrator provisioning on serverURL from src.
func benchProvisioner(b *testing.B, serverURL string, src fs.FS) *tenantmigrate.Orchestrator {
	b.Helper()
	cp := createDB(b, serverURL, "cp_"+randomHex(4))
	o, err := tenantmigrate.New(b.Context(), tenantmigrate.Config{
		DatabaseURL:   cp,
		EncryptionKey: bgKey,
		Migrations:    src,
		Provision:     tenantmigrate.ProvisionConfig{URL: serverURL, NameTemplate: "b" + randomHex(4) + "_{id}"},
	})
	require.NoError(b, err)
	b.Cleanup(o.Close)
	return o
}

func createDB(b *testing.B, serverURL, name string) string {
	b.Helper()
	conn, err := pgx.Connect(b.Context(), serverURL)
	require.NoError(b, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(b.Context(), "CREATE DATABASE "+name)
	require.NoError(b, err)
	u, err := url.Parse(serverURL)
	require.NoError(b, err)
	u.Path = "/" + name
	return u.String()
}

var benchSeq atomic.Int64

// BenchmarkProvision measures, side by side on one server, interleaved so
// that a busy machine slows every kind alike, each iteration doing one of
// each:
//
//   - provision/mN: ProvisionTenant with the template already built, at 10,
//     45 and 90 migrations (the 90 add 45 tables), and m90-same-schema: 90
//     migrations whose last 45 add no relation;
//   - floor: a bare CREATE DATABASE ... TEMPLATE (STRATEGY WAL_LOG, what
//     provisioning uses) of the 45-migration template on an open connection;
//   - file_copy: the same with STRATEGY FILE_COPY;
//   - create_migrate: CREATE DATABASE of an empty database plus migrating it
//     through the 45 migrations.
//
// It reports the median of each kind (ms) and the ratios the issue sets
// targets for.
func BenchmarkProvision(b *testing.B) {
	serverURL := benchServer(b)
	ctx := b.Context()
	orchs := map[int]*tenantmigrate.Orchestrator{}
	for _, n := range []int{10, 45, 90, -90} { // -90: 90 migrations, the 45's relations
		src := benchSource(b, n)
		if n < 0 {
			src = benchSourceSameSchema(b, -n)
		}
		orchs[n] = benchProvisioner(b, serverURL, src)
		_, err := orchs[n].ProvisionTenant(ctx, "warm") // builds the template
		require.NoError(b, err)
	}
	template := tenantmigrate.ProvisionTemplateName(orchs[45])
	conn, err := pgx.Connect(ctx, serverURL)
	require.NoError(b, err)
	defer conn.Close(context.Background())
	var size int64
	require.NoError(b, conn.QueryRow(ctx, "SELECT pg_database_size($1)", template).Scan(&size))
	b.Logf("45-migration template: %.1f MB", float64(size)/1e6)
	m45, err := migrator.New(migrator.Config{FS: benchSource(b, 45)})
	require.NoError(b, err)

	times := map[string][]time.Duration{}
	timed := func(kind string, fn func()) {
		start := time.Now()
		fn()
		times[kind] = append(times[kind], time.Since(start))
	}
	for b.Loop() {
		for _, n := range []int{10, 45, 90, -90} {
			kind := fmt.Sprintf("provision/m%d", n)
			if n < 0 {
				kind = fmt.Sprintf("provision/m%d-same-schema", -n)
			}
			timed(kind, func() {
				_, err := orchs[n].ProvisionTenant(ctx, fmt.Sprintf("t%d", benchSeq.Add(1)))
				require.NoError(b, err)
			})
		}
		for kind, strategy := range map[string]string{"floor": "WAL_LOG", "file_copy": "FILE_COPY"} {
			timed(kind, func() {
				_, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE f%d TEMPLATE %s STRATEGY %s", benchSeq.Add(1), template, strategy))
				require.NoError(b, err)
			})
		}
		timed("create_migrate", func() {
			name := fmt.Sprintf("m%d", benchSeq.Add(1))
			_, err := conn.Exec(ctx, "CREATE DATABASE "+name)
			require.NoError(b, err)
			u, err := url.Parse(serverURL)
			require.NoError(b, err)
			u.Path = "/" + name
			_, err = m45.Migrate(ctx, migrator.Target{DatabaseURL: u.String()})
			require.NoError(b, err)
		})
	}
	med := map[string]float64{}
	for kind, ds := range times {
		slices.Sort(ds)
		med[kind] = float64(ds[len(ds)/2].Microseconds()) / 1000
		b.ReportMetric(med[kind], kind+"-ms")
	}
	b.ReportMetric(med["provision/m45"]/med["floor"], "provision45/floor")
	b.ReportMetric(med["provision/m90"]/med["provision/m10"], "provision90/provision10")
	b.ReportMetric(med["provision/m90-same-schema"]/med["provision/m45"], "provision90same/provision45")
	b.ReportMetric(med["provision/m45"]/med["create_migrate"], "provision45/create_migrate")
	b.ReportMetric(med["file_copy"]/med["floor"], "file_copy/wal_log")
	b.ReportMetric(0, "ns/op")
}
