package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

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
// is taken, and an error wrapping ErrTargetPinned (nothing written) while the
// fleet target is pinned below version: the fleet is kept below it (a
// rollback), and a tenant registered above the pin would escape it. The
// target is read FOR SHARE in the insert's transaction, so a pin set
// meanwhile waits for the registration (and a rollback then selects it) or
// is seen by it.
//
// An error may be the lost reply to a COMMIT that took effect (a connection
// lost, a failover): the transaction's outcome is then looked up
// (txid_status). If it committed, the tenant is returned with no error;
// when the outcome cannot be learnt, the error wraps ErrOutcomeUnknown. Any
// other error means nothing was written.
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
	var (
		out Tenant
		xid int64 // the transaction's, to learn the outcome of its COMMIT
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var pin *int64
		if err := tx.QueryRow(ctx, `SELECT version, txid_current() FROM tenantmigrate.fleet_target FOR SHARE`).Scan(&pin, &xid); err != nil {
			return fmt.Errorf("read fleet target: %w", err)
		}
		if pin != nil && *pin < version {
			return fmt.Errorf("%w: pinned at %d, a new tenant would be at %d", ErrTargetPinned, *pin, version)
		}
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
	switch {
	case err == nil:
	case isUniqueViolation(err, "tenants_pkey"):
		return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, ErrTenantExists)
	case errors.Is(err, ErrTargetPinned) || xid == 0:
		return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, err)
	default:
		committed, serr := s.committed(ctx, xid)
		if serr != nil {
			return Tenant{}, fmt.Errorf("create tenant %s: %w (%w: %v)", t.ID, err, ErrOutcomeUnknown, serr)
		}
		if !committed {
			return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, err)
		}
	}
	out.DatabaseURL = t.DatabaseURL
	return out, nil
}

// committed waits, for at most a minute and whether or not ctx has ended,
// until transaction xid has ended, and reports whether it committed.
func (s *Store) committed(ctx context.Context, xid int64) (bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for {
		var status *string
		if err := s.pool.QueryRow(ctx, `SELECT txid_status($1)`, xid).Scan(&status); err != nil {
			return false, err
		}
		switch {
		case status == nil:
			return false, fmt.Errorf("transaction %d is too old to know its outcome", xid)
		case *status == "committed":
			return true, nil
		case *status == "aborted":
			return false, nil
		}
		select { // in progress: its session has not noticed its client is gone yet
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
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
