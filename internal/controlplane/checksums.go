package controlplane

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// MigrationChecksum is the checksum of one tenant migration version as it
// was when a run first applied it to some tenant.
type MigrationChecksum struct {
	// Version is the migration version.
	Version int64
	// Name is the migration's file name ("go migration N" for a Go
	// migration).
	Name string
	// Checksum identifies the migration's content (see
	// migrator.SourceMigration.Checksum).
	Checksum string
	// RecordedAt is when the checksum was recorded. RecordMigrationChecksums
	// ignores it: the database sets it.
	RecordedAt time.Time
}

// MigrationChecksums returns every recorded checksum, in version order.
func (s *Store) MigrationChecksums(ctx context.Context) ([]MigrationChecksum, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT version, name, checksum, recorded_at
		FROM tenantmigrate.migration_checksums
		ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("read migration checksums: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (MigrationChecksum, error) {
		var c MigrationChecksum
		err := row.Scan(&c.Version, &c.Name, &c.Checksum, &c.RecordedAt)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read migration checksums: %w", err)
	}
	return out, nil
}

// RecordMigrationChecksums records the checksums in one statement. A version
// already recorded keeps its first checksum (ON CONFLICT DO NOTHING), so
// concurrent runs may record the same versions. It returns how many versions
// were recorded for the first time.
func (s *Store) RecordMigrationChecksums(ctx context.Context, sums []MigrationChecksum) (int64, error) {
	if len(sums) == 0 {
		return 0, nil
	}
	versions := make([]int64, len(sums))
	names := make([]string, len(sums))
	checksums := make([]string, len(sums))
	for i, c := range sums {
		versions[i], names[i], checksums[i] = c.Version, c.Name, c.Checksum
	}
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO tenantmigrate.migration_checksums (version, name, checksum)
		SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
		ORDER BY 1
		ON CONFLICT (version) DO NOTHING`,
		versions, names, checksums)
	if err != nil {
		return 0, fmt.Errorf("record migration checksums: %w", err)
	}
	return tag.RowsAffected(), nil
}

// MaxMigrationsVersion returns the highest migrations_version of any tenant,
// or 0 when no tenant was ever migrated. The migrations_version index answers
// it.
func (s *Store) MaxMigrationsVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.pool.QueryRow(ctx,
		`SELECT coalesce(max(migrations_version), 0) FROM tenantmigrate.tenants`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read highest tenant version: %w", err)
	}
	return v, nil
}

// TenantsAboveVersion returns the ids of at most limit tenants recorded above
// version, highest version first.
func (s *Store) TenantsAboveVersion(ctx context.Context, version int64, limit int) ([]string, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id FROM tenantmigrate.tenants WHERE migrations_version > $1
		ORDER BY migrations_version DESC, id LIMIT $2`, version, limit)
	if err != nil {
		return nil, fmt.Errorf("read tenants above version %d: %w", version, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read tenants above version %d: %w", version, err)
	}
	return ids, nil
}

// MarkLackingVersion records every tenant COMPLETED above version as FAILED
// with errMsg, keeping its version: a source gained version out of order (a
// release added it below versions tenants already have), so those tenants
// lack it and are not up to date, and the scans and the gate run them again
// (goose applies the missing version). It returns how many it marked.
func (s *Store) MarkLackingVersion(ctx context.Context, version int64, errMsg string) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE tenantmigrate.tenants
		SET migrations_status = 'FAILED', last_error = $2, updated_at = now()
		WHERE id IN (
			-- Locked in id order: instances starting together mark the same
			-- rows, and two multi-row writers locking in scan order could
			-- deadlock.
			SELECT id FROM tenantmigrate.tenants
			WHERE migrations_status = 'COMPLETED' AND migrations_version > $1
			ORDER BY id FOR UPDATE)
		  AND migrations_status = 'COMPLETED' AND migrations_version > $1`, version, truncateError(errMsg))
	if err != nil {
		return 0, fmt.Errorf("mark tenants lacking version %d: %w", version, err)
	}
	return tag.RowsAffected(), nil
}
