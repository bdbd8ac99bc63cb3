package migrator

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
)

func TestNewRejectsInvalidSources(t *testing.T) {
	t.Parallel()
	goMigration := func(v int64) *goose.Migration {
		return goose.NewGoMigration(v, &goose.GoFunc{RunTx: func(context.Context, *sql.Tx) error { return nil }}, nil)
	}
	for name, tc := range map[string]struct {
		cfg     Config
		wantErr string
	}{
		"Nothing":       {Config{}, "no migrations"},
		"NoSQLFiles":    {Config{FS: sqlFS(map[string]string{"README.md": "hi", "seed.sql": "SELECT 1;", "sub/00001_x.sql": "-- +goose Up\n"})}, "no migrations"},
		"MissingUp":     {Config{FS: sqlFS(map[string]string{"00001_ok.sql": "-- +goose Up\nSELECT 1;\n", "00002_no_up.sql": "CREATE TABLE x (id int);\n"})}, "00002_no_up.sql"},
		"Unterminated":  {Config{FS: sqlFS(map[string]string{"00007_open.sql": "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n"})}, "00007_open.sql"},
		"NoSemicolon":   {Config{FS: sqlFS(map[string]string{"00003_semi.sql": "-- +goose Up\nSELECT 1\n-- +goose Down\nSELECT 2;\n"})}, "00003_semi.sql"},
		"BadAnnotation": {Config{FS: sqlFS(map[string]string{"00004_annot.sql": "-- +goose Up\n-- +goose NO TRANSACTON\nSELECT 1;\n"})}, "00004_annot.sql"},
		"DuplicateSQL":  {Config{FS: sqlFS(map[string]string{"00001_a.sql": "-- +goose Up\n", "001_b.sql": "-- +goose Up\n"})}, "duplicate"},
		"DuplicateGo":   {Config{FS: sqlFS(map[string]string{"00001_a.sql": "-- +goose Up\n"}), GoMigrations: []*goose.Migration{goMigration(1)}}, "duplicate"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := New(tc.cfg)
			require.ErrorContains(t, err, tc.wantErr)
			require.Nil(t, m)
		})
	}
}

func TestNewReadsSourceOnce(t *testing.T) {
	t.Parallel()
	fsys := sqlFS(map[string]string{
		"00001_a.sql":     "-- +goose Up\nCREATE TABLE a (id int);\n",
		"00010_b.sql":     "-- +goose Up\nCREATE TABLE b (id int);\n",
		"notes.txt":       "ignored",
		"sub/00002_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n",
	})
	m := newMigrator(t, Config{FS: fsys})
	require.Equal(t, []int64{1, 10}, m.Versions())
	require.Equal(t, int64(10), m.Latest())

	// The source is copied: later changes to it do not reach the Migrator.
	delete(fsys, "00010_b.sql")
	versions := m.Versions()
	versions[0] = 99
	require.Equal(t, []int64{1, 10}, m.Versions())
}

func TestNewDefaults(t *testing.T) {
	t.Parallel()
	m := newMigrator(t, Config{FS: examplemigrations.FS})
	require.Equal(t, time.Minute, m.lockWait)
	require.Equal(t, "5000ms", m.lockTimeoutParam)
	require.Equal(t, "0", m.stmtTimeoutParam)
	require.Equal(t, 1, m.maxConns)

	m = newMigrator(t, Config{FS: examplemigrations.FS, LockTimeout: 1500 * time.Millisecond, TenantLockTimeout: -1, StatementTimeout: 1500 * time.Microsecond})
	require.Equal(t, 2*time.Second, m.lockWait)
	require.Equal(t, "0", m.lockTimeoutParam)
	require.Equal(t, "2ms", m.stmtTimeoutParam)

	noTx := goose.NewGoMigration(9, &goose.GoFunc{RunDB: func(context.Context, *sql.DB) error { return nil }}, nil)
	m = newMigrator(t, Config{GoMigrations: []*goose.Migration{noTx}})
	require.Equal(t, 2, m.maxConns)
	require.Equal(t, []int64{9}, m.Versions())
}
