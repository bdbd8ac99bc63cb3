package controlplane

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

//go:embed migrations/*.sql
var migrationsFS embed.FS

// VersionTable is the goose version table of the control-plane migrations.
const VersionTable = Schema + ".controlplane_version"

// migrateLockKey is the session advisory lock (bigint form) that serializes
// Migrate across instances: "tmctlpln" in ASCII.
const migrateLockKey int64 = 0x746d_6374_6c70_6c6e

// Migrate creates or upgrades the control-plane schema: it creates the Schema,
// applies this package's migrations (goose, version table VersionTable) and
// River's migrations into the same schema. Several instances may call it at
// the same time: the whole run holds a session advisory lock on a dedicated
// connection made from the pool's configuration, so the pool only needs one
// connection.
func Migrate(ctx context.Context, pool *pgxpool.Pool) (retErr error) {
	connConfig := pool.Config().ConnConfig // a copy
	if connConfig.RuntimeParams == nil {
		connConfig.RuntimeParams = map[string]string{}
	}
	connConfig.RuntimeParams["application_name"] = "tenantmigrate-controlplane-migrate"
	lockConn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return fmt.Errorf("migrate control plane: connect: %w", err)
	}
	defer func() {
		// Closing the session releases the lock too; unlock first so a
		// connection pooler in session mode cannot keep it.
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, unlockErr := lockConn.Exec(cleanupCtx, "SELECT pg_advisory_unlock($1)", migrateLockKey)
		if unlockErr != nil && retErr == nil && !lockConn.IsClosed() {
			retErr = fmt.Errorf("migrate control plane: release lock: %w", unlockErr)
		}
		_ = lockConn.Close(cleanupCtx)
	}()

	if _, err := lockConn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return fmt.Errorf("migrate control plane: take lock: %w", err)
	}
	if _, err := lockConn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{Schema}.Sanitize()); err != nil {
		return fmt.Errorf("migrate control plane: create schema %s: %w", Schema, err)
	}
	if err := migrateControlPlane(ctx, pool); err != nil {
		return fmt.Errorf("migrate control plane: %w", err)
	}
	if err := migrateRiver(ctx, pool); err != nil {
		return fmt.Errorf("migrate control plane: %w", err)
	}
	return nil
}

// migrateControlPlane applies the embedded goose migrations.
func migrateControlPlane(ctx context.Context, pool *pgxpool.Pool) error {
	fsys, err := fs.Sub(migrationsFS, "migrations")
	if err != nil {
		return err
	}
	db := stdlib.OpenDBFromPool(pool) // closing db leaves the pool open
	provider, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(VersionTable),
		// Other packages may register Go migrations globally for tenants.
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		_ = db.Close()
		return fmt.Errorf("create goose provider: %w", err)
	}
	defer provider.Close() // closes db

	if _, err := provider.Up(ctx); err != nil {
		// A *goose.PartialError names the failed version.
		return fmt.Errorf("apply migrations: %w", err)
	}
	return nil
}

// migrateRiver applies River's migrations into Schema.
func migrateRiver(ctx context.Context, pool *pgxpool.Pool) error {
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{
		Logger: slog.New(slog.DiscardHandler),
		Schema: Schema,
	})
	if err != nil {
		return fmt.Errorf("create river migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("apply river migrations: %w", err)
	}
	return nil
}

// SchemaVersions returns the version of the control-plane schema that the
// database holds (0 when Migrate never ran on it) and the one this build's
// Migrate brings it to, reading only: no lock, no DDL. River's part of the
// schema is not looked at.
func SchemaVersions(ctx context.Context, pool *pgxpool.Pool) (have, want int64, err error) {
	entries, err := fs.ReadDir(migrationsFS, "migrations")
	if err != nil {
		return 0, 0, fmt.Errorf("read control-plane migrations: %w", err)
	}
	for _, e := range entries {
		v, err := goose.NumericComponent(e.Name())
		if err != nil {
			return 0, 0, fmt.Errorf("control-plane migration %s: %w", e.Name(), err)
		}
		want = max(want, v)
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, VersionTable).Scan(&exists); err != nil {
		return 0, 0, fmt.Errorf("read control-plane schema version: %w", err)
	}
	if !exists {
		return 0, want, nil
	}
	if err := pool.QueryRow(ctx,
		`SELECT coalesce(max(version_id), 0) FROM `+VersionTable+` WHERE is_applied`, // a constant name
	).Scan(&have); err != nil {
		return 0, 0, fmt.Errorf("read control-plane schema version: %w", err)
	}
	return have, want, nil
}
