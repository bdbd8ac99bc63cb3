package tenantmigrate_test

import (
	"context"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestEnvsubMigrationsRefused: a source with "-- +goose ENVSUB ON" files
// (in any of the spellings goose accepts) is refused by New with an error
// naming them and saying why, before anything connects; AllowEnvsub accepts
// it and logs a warning naming them. Before, goose filled ${VAR} from each
// process's environment while the checksum covered the raw file, and three
// tenants got three different tables that verify called consistent.
func TestEnvsubMigrationsRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	src := fstest.MapFS{
		"00001_plain.sql":  {Data: []byte("-- +goose Up\n-- a comment that says ENVSUB ON is no annotation\nCREATE TABLE a (id int);\n")},
		"00002_envsub.sql": {Data: []byte("-- +goose Up\n-- +goose ENVSUB ON\nCREATE TABLE ${TABLE_NAME:-b} (id int);\n-- +goose ENVSUB OFF\n")},
		"00003_off.sql":    {Data: []byte("-- +goose Up\n-- +goose ENVSUB OFF\nCREATE TABLE c (id int);\n")},
		"00004_lower.sql":  {Data: []byte("-- +goose Up\r\n--  +goose   envsub on  \r\nCREATE TABLE d (id int);\r\n")},
	}
	_, err := tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: src})
	require.ErrorIs(t, err, tenantmigrate.ErrEnvsubMigrations)
	var envsub *tenantmigrate.EnvsubMigrationsError
	require.ErrorAs(t, err, &envsub)
	require.Equal(t, []string{"00002_envsub.sql", "00004_lower.sql"}, envsub.Names)
	require.ErrorContains(t, err, "00002_envsub.sql, 00004_lower.sql: goose replaces ${VAR} in them from the environment of each process")
	require.ErrorContains(t, err, "cannot prove that every tenant got the same SQL")
	require.ErrorContains(t, err, "Config.AllowEnvsub")
	// Refused before connecting: the control plane was not even created.
	conn, err := pgx.Connect(ctx, cpURL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(ctx))
	var exists bool
	require.NoError(t, conn.QueryRow(ctx, `SELECT to_regnamespace('tenantmigrate') IS NOT NULL`).Scan(&exists))
	require.False(t, exists)

	// Read-only Orchestrators refuse them too: verify cannot vouch for them.
	_, err = tenantmigrate.New(ctx, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: src, ReadOnly: true})
	require.ErrorIs(t, err, tenantmigrate.ErrEnvsubMigrations)

	var logs logBuffer
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: src, AllowEnvsub: true, Logger: logs.logger()})
	require.Equal(t, int64(4), o.Latest())
	require.Contains(t, logs.String(), `"level":"WARN"`)
	require.Contains(t, logs.String(), `"migrations":["00002_envsub.sql","00004_lower.sql"]`)
	require.Contains(t, logs.String(), "AllowEnvsub")

	// A source without the annotation is accepted as before.
	delete(src, "00002_envsub.sql")
	delete(src, "00004_lower.sql")
	newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: src})
}
