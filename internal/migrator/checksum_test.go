package migrator

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"testing"

	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"
)

func TestChecksumsOfSource(t *testing.T) {
	t.Parallel()
	const a = "-- +goose Up\nCREATE TABLE a (id int);\n"
	const b = "-- +goose Up\r\nCREATE TABLE b (id int);\r\n" // bytes as they are: no normalisation
	fsys := sqlFS(map[string]string{"00001_a.sql": a, "00010_b.sql": b, "notes.txt": "ignored"})
	goMig := goose.NewGoMigration(5, &goose.GoFunc{RunTx: func(context.Context, *sql.Tx) error { return nil }}, nil)
	m := newMigrator(t, Config{FS: fsys, GoMigrations: []*goose.Migration{goMig}})

	sum := func(s string) string {
		h := sha256.Sum256([]byte(s))
		return "sha256:" + hex.EncodeToString(h[:])
	}
	want := []SourceMigration{
		{Version: 1, Name: "00001_a.sql", Checksum: sum(a)},
		{Version: 5, Name: "go migration 5", Checksum: GoChecksum},
		{Version: 10, Name: "00010_b.sql", Checksum: sum(b)},
	}
	require.Equal(t, want, m.Migrations())
	require.True(t, m.Migrations()[1].IsGo())
	require.False(t, m.Migrations()[0].IsGo())

	// Computed from the copy New made: later edits of the source do not show.
	fsys["00001_a.sql"].Data = []byte("-- +goose Up\nCREATE TABLE a (id bigint);\n")
	got := m.Migrations()
	got[0].Name = "changed"
	require.Equal(t, want, m.Migrations())
}

func TestChecksumAppliedIsReadOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := newTestDB(t)
	conn := connect(t, dbURL)
	m := newMigrator(t, Config{FS: exampleUpTo(t, 2)})

	for _, target := range []Target{{DatabaseURL: dbURL}, {DatabaseURL: dbURL, Schema: "acme"}} {
		// Nothing there yet: no versions, and nothing created.
		applied, err := m.Applied(ctx, target)
		require.NoError(t, err, target.Schema)
		require.Empty(t, applied, target.Schema)
		require.False(t, queryBool(t, conn, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'acme')`))

		_, err = m.Migrate(ctx, target)
		require.NoError(t, err)
		applied, err = m.Applied(ctx, target)
		require.NoError(t, err)
		require.Equal(t, []int64{1, 2}, applied, target.Schema)
	}

	// Versions the source lacks and gaps are reported as they are, sorted and once each.
	exec(t, conn, `INSERT INTO acme.goose_db_version (version_id, is_applied) VALUES (9, true), (7, true), (9, true)`)
	exec(t, conn, `DELETE FROM acme.goose_db_version WHERE version_id = 1`)
	applied, err := m.Applied(ctx, Target{DatabaseURL: dbURL, Schema: "acme"})
	require.NoError(t, err)
	require.Equal(t, []int64{2, 7, 9}, applied)

	_, err = m.Applied(ctx, Target{DatabaseURL: "postgres://nobody:Secret-pw@127.0.0.1:1/none?connect_timeout=5"})
	require.Error(t, err)
	require.True(t, IsRetryable(err))
	require.NotContains(t, err.Error(), "Secret-pw")
}
