package tenantmigrate_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"log/slog"
	"maps"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// recordedChecksum is a row of tenantmigrate.migration_checksums.
type recordedChecksum struct {
	Version  int64
	Name     string
	Checksum string
}

func recordedChecksums(t *testing.T, cpURL string) []recordedChecksum {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), cpURL)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	rows, err := conn.Query(t.Context(), `SELECT version, name, checksum FROM tenantmigrate.migration_checksums ORDER BY version`)
	require.NoError(t, err)
	sums, err := pgx.CollectRows(rows, pgx.RowToStructByPos[recordedChecksum])
	require.NoError(t, err)
	return sums
}

// driftExec runs sql on the database at url.
func driftExec(t *testing.T, url, sql string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	_, err = conn.Exec(t.Context(), sql)
	require.NoError(t, err)
}

func sha256Of(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// logBuffer collects JSON logs for a test.
type logBuffer struct{ fleettest.SyncBuffer }

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewJSONHandler(b, nil)) }

// migratedFleet is a control plane with one tenant migrated with testMigrations.
func migratedFleet(t *testing.T) (cpURL, tenantURL string) {
	t.Helper()
	cpURL = pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: testMigrations()})
	tenantURL = pgtest.NewDatabase(t)
	_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: "acme", DatabaseURL: tenantURL})
	require.NoError(t, err)
	v, err := o.MigrateTenant(t.Context(), "acme")
	require.NoError(t, err)
	require.EqualValues(t, 3, v)
	return cpURL, tenantURL
}

// withFile returns a copy of fsys with name set to data, or removed when
// data is nil.
func withFile(fsys fstest.MapFS, name string, data []byte) fstest.MapFS {
	out := maps.Clone(fsys)
	if data == nil {
		delete(out, name)
	} else {
		out[name] = &fstest.MapFile{Data: data}
	}
	return out
}

func TestChecksumRecordedAfterApply(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL := pgtest.NewDatabase(t)
	goMig := goose.NewGoMigration(4, &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE from_go (id int)`)
		return err
	}}, nil)
	cfg := tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: testMigrations(), GoMigrations: []*goose.Migration{goMig}}
	o := newOrchestrator(t, cfg)
	require.Empty(t, recordedChecksums(t, cpURL), "nothing applied yet")

	_, err := o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: pgtest.NewDatabase(t)})
	require.NoError(t, err)
	v, err := o.MigrateTenant(ctx, "acme")
	require.NoError(t, err)
	require.EqualValues(t, 4, v)

	src := testMigrations()
	want := []recordedChecksum{
		{1, "00001_users.sql", sha256Of(src["00001_users.sql"].Data)},
		{2, "00002_notes.sql", sha256Of(src["00002_notes.sql"].Data)},
		{3, "00003_notes_index.sql", sha256Of(src["00003_notes_index.sql"].Data)},
		{4, "go migration 4", "go"},
	}
	require.Equal(t, want, recordedChecksums(t, cpURL))

	// Another tenant applying the same versions records nothing new, and a
	// second instance with the same source starts.
	_, err = o.CreateTenant(ctx, tenantmigrate.Tenant{ID: "globex", DatabaseURL: pgtest.NewDatabase(t), Schema: "globex"})
	require.NoError(t, err)
	_, err = o.MigrateTenant(ctx, "globex")
	require.NoError(t, err)
	newOrchestrator(t, cfg)
	require.Equal(t, want, recordedChecksums(t, cpURL))
}

func TestDriftEditedFileRefusesStart(t *testing.T) {
	t.Parallel()
	cpURL, _ := migratedFleet(t)
	edited := withFile(testMigrations(), "00002_notes.sql", []byte(`-- +goose Up
CREATE TABLE notes (id bigserial PRIMARY KEY, user_id bigint REFERENCES users(id), body text NOT NULL);
`))
	o, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: edited})
	require.Nil(t, o)
	require.ErrorIs(t, err, tenantmigrate.ErrMigrationsChanged)
	var changed *tenantmigrate.MigrationsChangedError
	require.ErrorAs(t, err, &changed)
	require.Len(t, changed.Changes, 1)
	c := changed.Changes[0]
	require.Equal(t, int64(2), c.Version)
	require.Equal(t, tenantmigrate.MigrationChecksumDiffers, c.Change)
	require.Equal(t, sha256Of(testMigrations()["00002_notes.sql"].Data), c.RecordedChecksum)
	require.Equal(t, sha256Of(edited["00002_notes.sql"].Data), c.SourceChecksum)
	require.Contains(t, err.Error(), "migrations changed since they were applied: 00002_notes.sql (checksum differs); ")
	require.Contains(t, err.Error(), "Config.AllowChangedMigrations")

	// Renaming a file keeps its content: that is no change.
	renamed := withFile(testMigrations(), "00002_notes.sql", nil)
	renamed["00002_create_notes.sql"] = testMigrations()["00002_notes.sql"]
	newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: renamed})
}

func TestDriftMissingFileRefusesStart(t *testing.T) {
	t.Parallel()
	cpURL, _ := migratedFleet(t)
	next := []byte("-- +goose Up\nCREATE TABLE tags (id int);\n")

	// 00002 removed while 00003 and a new 00004 stay, and 00003 edited: both named.
	src := withFile(testMigrations(), "00002_notes.sql", nil)
	src = withFile(src, "00003_notes_index.sql", []byte("-- +goose NO TRANSACTION\n-- +goose Up\nSELECT 1;\n"))
	src = withFile(src, "00004_tags.sql", next)
	_, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: src})
	require.ErrorIs(t, err, tenantmigrate.ErrMigrationsChanged)
	require.Contains(t, err.Error(), "00002_notes.sql (missing), 00003_notes_index.sql (checksum differs)")

	// The latest applied version removed (a build older than the fleet, e.g.
	// a rollback): it starts, and says so.
	var logs logBuffer
	older := withFile(testMigrations(), "00003_notes_index.sql", nil)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: older, Logger: logs.logger()})
	require.Empty(t, o.ChangedMigrations())
	require.Contains(t, logs.String(), `"level":"WARN","msg":"the control plane recorded migrations this build's source does not have`)
	require.Contains(t, logs.String(), `"versions":[3]`)
}

func TestDriftAllowChangedMigrationsStartsAndWarns(t *testing.T) {
	t.Parallel()
	cpURL, tenantURL := migratedFleet(t)
	src := withFile(testMigrations(), "00001_users.sql", []byte("-- +goose Up\nCREATE TABLE users (id bigserial PRIMARY KEY, email text);\n"))
	src = withFile(src, "00004_tags.sql", []byte("-- +goose Up\nCREATE TABLE tags (id int);\n"))

	var logs logBuffer
	o := newOrchestrator(t, tenantmigrate.Config{
		DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: src,
		AllowChangedMigrations: true, Logger: logs.logger(),
	})
	require.Contains(t, logs.String(), `"level":"WARN","msg":"migrations changed since they were applied; starting anyway (AllowChangedMigrations)","migrations":["00001_users.sql (checksum differs)"]`)
	changed := o.ChangedMigrations()
	require.Len(t, changed, 1)
	require.Equal(t, "00001_users.sql", changed[0].Name)

	// It runs: the tenant gets 00004, whose checksum is recorded; the
	// recorded checksum of 00001 stays the one that was applied.
	v, err := o.MigrateTenant(t.Context(), "acme")
	require.NoError(t, err)
	require.EqualValues(t, 4, v)
	require.Equal(t, []int64{1, 2, 3, 4}, fleettest.AppliedVersions(t, tenantURL, ""))
	sums := recordedChecksums(t, cpURL)
	require.Len(t, sums, 4)
	require.Equal(t, sha256Of(testMigrations()["00001_users.sql"].Data), sums[0].Checksum)
	require.Equal(t, sha256Of(src["00004_tags.sql"].Data), sums[3].Checksum)
}

// TestDriftBackfillsControlPlanesWithoutChecksums: tenants migrated before
// the checksums table existed get their versions recorded at the next start,
// from the source of that start, so later edits are caught.
func TestDriftBackfillsControlPlanesWithoutChecksums(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: fleettest.Migrations("CREATE TABLE a (id int);", "CREATE TABLE b (id int);")})
	_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: "acme", DatabaseURL: pgtest.NewDatabase(t)})
	require.NoError(t, err)
	_, err = o.MigrateTenant(t.Context(), "acme")
	require.NoError(t, err)
	driftExec(t, cpURL, `TRUNCATE tenantmigrate.migration_checksums`)

	// The next build adds version 3; the tenants are at 2.
	src := fleettest.Migrations("CREATE TABLE a (id int);", "CREATE TABLE b (id int);", "CREATE TABLE c (id int);")
	newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, Migrations: src})
	sums := recordedChecksums(t, cpURL)
	require.Equal(t, []recordedChecksum{
		{1, "00001_v1.sql", sha256Of(src["00001_v1.sql"].Data)},
		{2, "00002_v2.sql", sha256Of(src["00002_v2.sql"].Data)},
	}, sums)

	_, err = tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: cpURL,
		Migrations: withFile(src, "00002_v2.sql", []byte("-- +goose Up\nCREATE TABLE b (id bigint);\n"))})
	require.ErrorIs(t, err, tenantmigrate.ErrMigrationsChanged)
}

// TestDriftVerifyTenant checks VerifyTenant's findings; the verify command's
// tests cover its output.
func TestDriftVerifyTenant(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cpURL, tenantURL := migratedFleet(t)
	o := newOrchestrator(t, tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: testKey, Migrations: testMigrations()})
	verify := func() tenantmigrate.TenantVerification {
		tn, err := o.GetTenant(ctx, "acme")
		require.NoError(t, err)
		return o.VerifyTenant(ctx, tn)
	}

	v := verify()
	require.True(t, v.OK(), "%+v", v)
	require.EqualValues(t, 3, v.DatabaseVersion)
	require.Empty(t, v.Problems())
	applied, err := o.AppliedVersions(ctx, "acme")
	require.NoError(t, err)
	require.Equal(t, []int64{1, 2, 3}, applied)

	// A gap below the current version.
	driftExec(t, tenantURL, `DELETE FROM goose_db_version WHERE version_id = 2`)
	v = verify()
	require.False(t, v.OK())
	require.True(t, v.Inconsistent())
	require.False(t, v.VersionMismatch())
	require.Equal(t, []int64{2}, v.Gaps)
	require.Equal(t, []string{"inconsistent: its database lacks versions 2 below its version 3"}, v.Problems())

	// Ahead of the source, and so at another version than the control plane.
	driftExec(t, tenantURL, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (2, true), (7, true)`)
	v = verify()
	require.Equal(t, []int64{7}, v.Ahead)
	require.Empty(t, v.Gaps)
	require.True(t, v.IsAhead())
	require.True(t, v.VersionMismatch())
	require.Equal(t, []string{
		"ahead of the source: applied versions 7 that the source lacks",
		"inconsistent: the control plane has it at version 3, its database is at version 7",
	}, v.Problems())

	// Unreachable.
	unreachable := closedPortURL(t)
	_, err = o.PatchTenant(ctx, "acme", tenantmigrate.TenantPatch{DatabaseURL: &unreachable})
	require.NoError(t, err)
	v = verify()
	require.True(t, v.Unreachable())
	require.False(t, v.Inconsistent())
	require.EqualValues(t, -1, v.DatabaseVersion)
}
