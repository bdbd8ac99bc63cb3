package controlplane

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Provisioned is what the control plane keeps of a tenant database that
// tenantmigrate created (internal/provisioning).
type Provisioned struct {
	// Database is the database's name on the provision server.
	Database string
	// Token is the token of the comment on that database.
	Token string
}

// CreateProvisioned inserts tenant t (ID and DatabaseURL; database-per-tenant)
// as Create does, recorded COMPLETED at version, with p, and runs inTx (if
// not nil) in the same transaction, so that what it writes (a history row)
// lands with the tenant or not at all. It returns ErrTenantExists when the id
// is taken.
func (s *Store) CreateProvisioned(ctx context.Context, t Tenant, version int64, p Provisioned, inTx func(ctx context.Context, tx pgx.Tx) error) (Tenant, error) {
	if err := validateTenant(t); err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	if t.Schema != "" {
		return Tenant{}, fmt.Errorf("create tenant %s: %w: a provisioned tenant has its whole database", t.ID, ErrInvalid)
	}
	if p.Database == "" || p.Token == "" {
		return Tenant{}, fmt.Errorf("create tenant %s: %w: no provisioned database", t.ID, ErrInvalid)
	}
	enc, err := s.encrypt(t.DatabaseURL)
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, err)
	}
	var out Tenant
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out, _, err = scanTenant(tx.QueryRow(ctx, `
			INSERT INTO tenantmigrate.tenants (id, database_url, key_id, migrations_version, migrations_status,
				provisioned_database, provision_token)
			VALUES ($1, $2, $3, $4, 'COMPLETED', $5, $6)
			RETURNING `+tenantColumns,
			t.ID, enc.b, enc.keyID, version, p.Database, p.Token))
		if err != nil {
			return err
		}
		if inTx != nil {
			return inTx(ctx, tx)
		}
		return nil
	})
	if err != nil {
		if isUniqueViolation(err, "tenants_pkey") {
			return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, ErrTenantExists)
		}
		return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, err)
	}
	out.DatabaseURL = t.DatabaseURL
	return out, nil
}

// GetProvisioned returns what the control plane keeps of tenant id's
// provisioned database, the zero Provisioned for a tenant that was not
// provisioned (or whose URL changed since). It reads no URL, so it needs no
// cipher. It returns ErrTenantNotFound when there is no such tenant.
func (s *Store) GetProvisioned(ctx context.Context, id string) (Provisioned, error) {
	if ValidateTenantID(id) != nil {
		return Provisioned{}, fmt.Errorf("get tenant %s: %w", quoteShort(id), ErrTenantNotFound)
	}
	var p Provisioned
	err := s.pool.QueryRow(ctx, `
		SELECT coalesce(provisioned_database, ''), coalesce(provision_token, '')
		FROM tenantmigrate.tenants WHERE id = $1`, id).Scan(&p.Database, &p.Token)
	if errors.Is(err, pgx.ErrNoRows) {
		return Provisioned{}, fmt.Errorf("get tenant %s: %w", id, ErrTenantNotFound)
	}
	if err != nil {
		return Provisioned{}, fmt.Errorf("get tenant %s: %w", id, err)
	}
	return p, nil
}

// DeleteProvisioned removes tenant id if it is still recorded with p (its
// URL was not changed meanwhile). It returns ErrTenantNotFound when there is
// no such tenant and ErrStaleResult when it is no longer recorded with p.
func (s *Store) DeleteProvisioned(ctx context.Context, id string, p Provisioned) error {
	tag, err := s.pool.Exec(ctx, `
		DELETE FROM tenantmigrate.tenants
		WHERE id = $1 AND provisioned_database = $2 AND provision_token = $3`, id, p.Database, p.Token)
	if err != nil {
		return fmt.Errorf("delete tenant %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete tenant %s: %w", id, s.missingOrStale(ctx, id))
	}
	return nil
}
