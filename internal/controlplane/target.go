package controlplane

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/internal/labels"
)

// TargetPayload is the payload of the notification (on NotifyChannel) sent
// when the fleet target changes. No tenant id can be it.
const TargetPayload = "#target"

// FleetTarget is the stored fleet target (table tenantmigrate.fleet_target).
type FleetTarget struct {
	// Version is the pinned target; nil when none is pinned (each release
	// aims at its latest version).
	Version *int64
	// Generation counts the changes of the target.
	Generation int64
	// UpdatedAt is when it last changed.
	UpdatedAt time.Time
}

// FleetTarget reads the fleet target.
func (s *Store) FleetTarget(ctx context.Context) (FleetTarget, error) {
	var t FleetTarget
	err := s.pool.QueryRow(ctx, `SELECT version, generation, updated_at FROM tenantmigrate.fleet_target`).
		Scan(&t.Version, &t.Generation, &t.UpdatedAt)
	if err != nil {
		return FleetTarget{}, fmt.Errorf("read fleet target: %w", err)
	}
	return t, nil
}

// SetFleetTarget pins the fleet target to version, or clears the pin when
// version is nil, and returns the stored target. A change notifies every
// listener (TargetPayload); setting the value it already has changes and
// notifies nothing. A negative version wraps ErrInvalid. The caller checks
// the version against its source.
func (s *Store) SetFleetTarget(ctx context.Context, version *int64) (FleetTarget, error) {
	if version != nil && *version < 0 {
		return FleetTarget{}, fmt.Errorf("set fleet target: %w target version %d: must not be negative", ErrInvalid, *version)
	}
	var t FleetTarget
	err := s.pool.QueryRow(ctx, `
		WITH upd AS (
			UPDATE tenantmigrate.fleet_target
			SET version = $1, generation = generation + 1, updated_at = now()
			WHERE version IS DISTINCT FROM $1
			RETURNING version, generation, updated_at
		)
		SELECT version, generation, updated_at FROM upd
		UNION ALL
		SELECT version, generation, updated_at FROM tenantmigrate.fleet_target WHERE NOT EXISTS (SELECT 1 FROM upd)`,
		version).Scan(&t.Version, &t.Generation, &t.UpdatedAt)
	if err != nil {
		return FleetTarget{}, fmt.Errorf("set fleet target: %w", err)
	}
	return t, nil
}

// TenantVersion is a tenant's id and recorded version.
type TenantVersion struct {
	ID      string
	Version *int64
	Status  Status
}

// ScanAbove returns up to limit tenants recorded above version, with
// cursor_id above afterCursor, in cursor_id order, and the cursor of the next
// page (0 when there is none): the tenants a rollback to version undoes. The
// migrations_version index answers the filter.
func (s *Store) ScanAbove(ctx context.Context, version int64, afterCursor int64, limit int) (found []TenantVersion, nextCursor int64, err error) {
	return s.ScanAboveMatching(ctx, version, labels.Selector{}, afterCursor, limit)
}

// ScanAboveMatching is ScanAbove of the tenants whose labels match sel.
func (s *Store) ScanAboveMatching(ctx context.Context, version int64, sel labels.Selector, afterCursor int64, limit int) (found []TenantVersion, nextCursor int64, err error) {
	limit = pageSize(limit)
	cond, args := sel.SQL("labels", 4)
	rows, err := s.pool.Query(ctx, `
		SELECT id, migrations_version, coalesce(migrations_status, ''), cursor_id FROM tenantmigrate.tenants
		WHERE migrations_version > $1 AND cursor_id > $2 AND `+cond+`
		ORDER BY cursor_id LIMIT $3`, append([]any{version, afterCursor, limit + 1}, args...)...)
	if err != nil {
		return nil, 0, fmt.Errorf("scan tenants above %d: %w", version, err)
	}
	type row struct {
		tv     TenantVersion
		cursor int64
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		var status string
		err := r.Scan(&x.tv.ID, &x.tv.Version, &status, &x.cursor)
		x.tv.Status = Status(status)
		return x, err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("scan tenants above %d: %w", version, err)
	}
	all, nextCursor = page(all, limit, func(r row) int64 { return r.cursor })
	found = make([]TenantVersion, len(all))
	for i, r := range all {
		found[i] = r.tv
	}
	return found, nextCursor, nil
}

// ForgetChecksumsAbove deletes the recorded checksums of the versions above
// every tenant's recorded version: versions a rollback undid everywhere, so
// that the file applied again later (fixed, perhaps) is recorded as it is
// then. It returns the versions it forgot.
func (s *Store) ForgetChecksumsAbove(ctx context.Context) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `
		DELETE FROM tenantmigrate.migration_checksums
		WHERE version > (SELECT coalesce(max(migrations_version), 0) FROM tenantmigrate.tenants)
		RETURNING version`)
	if err != nil {
		return nil, fmt.Errorf("forget checksums of undone versions: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("forget checksums of undone versions: %w", err)
	}
	return versions, nil
}
