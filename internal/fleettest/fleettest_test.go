package fleettest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

func TestMigrations(t *testing.T) {
	t.Parallel()
	fsys := Migrations("CREATE TABLE a (id int);", "-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 1;\n")
	require.Len(t, fsys, 2)
	require.Equal(t, "-- +goose Up\nCREATE TABLE a (id int);\n", string(fsys["00001_v1.sql"].Data))
	require.Equal(t, "-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 1;\n", string(fsys["00002_v2.sql"].Data))
}

func TestSyncBuffer(t *testing.T) {
	t.Parallel()
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	require.Equal(t, strings.Repeat("x", 800), b.String())
}

// fatalTB records Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestPoll(t *testing.T) {
	t.Parallel()
	n := 0
	Poll(t, time.Millisecond, time.Minute, "three checks", func() bool { n++; return n == 3 })
	require.Equal(t, 3, n)

	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Poll(f, time.Millisecond, 20*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	require.Equal(t, "timed out after 20ms waiting for never", f.msg)
}

// TestControlPlaneAndTenants checks the readers against a control plane and
// a tenant schema written by hand.
func TestControlPlaneAndTenants(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cp := NewControlPlane(t, "CREATE TABLE runs (tenant_id text NOT NULL)")
	pool, err := pgxpool.New(ctx, cp)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	var registered []SchemaTenant
	tenants := NewSchemaTenants(t, "x", 1, 2, func(tn SchemaTenant) { registered = append(registered, tn) })
	require.Equal(t, tenants, registered)
	require.Equal(t, []string{"x-000", "x-001"}, IDs(tenants))
	require.Equal(t, "s_001", tenants[1].Schema)
	require.Equal(t, tenants[0].URL, tenants[1].URL)

	_, err = pool.Exec(ctx, `
		INSERT INTO tenantmigrate.tenants (id, database_url, migrations_version, migrations_status)
		VALUES ('x-000', '\x00', 2, 'COMPLETED'), ('x-001', '\x00', 1, 'COMPLETED');
		INSERT INTO runs VALUES ('a'), ('a'), ('b');`)
	require.NoError(t, err)
	require.Equal(t, 1, CountCompleted(t, pool, IDs(tenants), 2))
	require.Equal(t, map[string]int{"a": 2, "b": 1}, Counts(t, pool, "SELECT tenant_id, count(*)::int FROM runs GROUP BY 1"))
	require.Empty(t, JobsPerTenant(t, pool))
	require.Equal(t, Job{}, LastJob(t, pool, "x-000"))

	conn, err := pgx.Connect(ctx, tenants[0].URL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(ctx))
	for _, tn := range tenants {
		table := pgx.Identifier{tn.Schema, "goose_db_version"}.Sanitize()
		_, err = conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{tn.Schema}.Sanitize()+
			"; CREATE TABLE "+table+" (id serial PRIMARY KEY, version_id bigint NOT NULL)"+
			"; INSERT INTO "+table+" (version_id) VALUES (0), (1), (2)")
		require.NoError(t, err)
	}
	require.Equal(t, []int64{1, 2}, AppliedVersions(t, tenants[0].URL, tenants[0].Schema))
	RequireAppliedOnce(t, tenants, 1, 2)
}
