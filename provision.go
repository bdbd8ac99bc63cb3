package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/history"
	"github.com/tenantmigrate/tenantmigrate/internal/provisioning"
)

// This file wires internal/provisioning: new tenants whose database is a
// clone of a template kept at the latest version (Config.Provision).

var (
	// ErrProvisioningNotConfigured is returned by ProvisionTenant and
	// DeprovisionTenant without Config.Provision.URL.
	ErrProvisioningNotConfigured = provisioning.ErrNotConfigured
	// ErrNotProvisioned is wrapped by DeprovisionTenant's error for a tenant
	// whose database tenantmigrate did not create (registered with a URL, or
	// whose URL changed since), or when the database of that name on the
	// provision server is not the one it created: nothing was dropped or
	// removed.
	ErrNotProvisioned = provisioning.ErrNotProvisioned
	// ErrDatabaseExists is wrapped by ProvisionTenant's error when the new
	// tenant's database name is taken on the provision server. That database
	// is left as it is, and no tenant is registered.
	ErrDatabaseExists = provisioning.ErrDatabaseExists
	// ErrProvisionTargetPinned is wrapped by ProvisionTenant's error while
	// the fleet target is pinned below the latest version.
	ErrProvisionTargetPinned = controlplane.ErrTargetPinned
)

// newProvisioner sets up o.provisioner when Config.Provision.URL is set.
func (o *Orchestrator) newProvisioner() error {
	pc := o.cfg.Provision
	if pc.URL == "" {
		return nil
	}
	cfg := provisioning.Config{
		URL:               pc.URL,
		NameTemplate:      pc.NameTemplate,
		TenantURLTemplate: pc.TenantURLTemplate,
		RecordChecksums:   o.recordChecksums,
		Logger:            o.logger,
	}
	if o.migrator != nil && !o.cfg.ReadOnly {
		cfg.Migrator = o.migrator
	}
	p, err := provisioning.New(cfg)
	if err != nil {
		return fmt.Errorf("%w: Provision: %v", ErrInvalidConfig, err)
	}
	o.provisioner = p
	return nil
}

// ProvisionTenant creates tenant id with a new database: a clone (CREATE
// DATABASE ... TEMPLATE) of a template database kept at the latest version
// on the provision server (Config.Provision), built and migrated on first
// use, and built again for a source with another latest version. The tenant
// is registered with the URL of Config.Provision.TenantURLTemplate and
// recorded COMPLETED at the latest version, since the clone holds every
// migration and the version table that records them. No migration runs for
// it.
//
// It returns ErrProvisioningNotConfigured without Config.Provision.URL,
// ErrReadOnly for a ReadOnly Orchestrator, ErrTenantExists when the id is
// taken, an error wrapping ErrDatabaseExists when its database name is, and
// ErrNoEncryptionKey without Config.EncryptionKey. On any error no tenant is
// registered and no database is left behind (but a database that existed
// before is never touched).
func (o *Orchestrator) ProvisionTenant(ctx context.Context, id string) (Tenant, error) {
	switch {
	case o.provisioner == nil:
		return Tenant{}, ErrProvisioningNotConfigured
	case o.cfg.ReadOnly:
		return Tenant{}, ErrReadOnly
	case o.migrator == nil:
		return Tenant{}, errNoMigrationsConfigured
	case o.cfg.EncryptionKey == "":
		return Tenant{}, ErrNoEncryptionKey
	}
	if err := controlplane.ValidateTenantID(id); err != nil {
		return Tenant{}, err
	}
	// Check what can be checked before creating a database.
	name, err := o.provisioner.DatabaseName(id)
	if err != nil {
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", id, err)
	}
	url, err := o.provisioner.TenantURL(id, name)
	if err == nil {
		err = controlplane.ValidateDatabaseURL(url)
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", id, err)
	}
	// A clone holds the latest version: not while a pin (a rollback) keeps
	// the fleet below it. Checked again in the registration's transaction.
	if ft, err := o.store.FleetTarget(ctx); err != nil {
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", id, err)
	} else if ft.Version != nil && *ft.Version < o.latest {
		return Tenant{}, fmt.Errorf("provision tenant %s: %w: pinned at %d, a new tenant would be at %d", id, ErrProvisionTargetPinned, *ft.Version, o.latest)
	}
	switch _, err := o.store.GetState(ctx, id); {
	case err == nil:
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", id, ErrTenantExists)
	case !errors.Is(err, ErrTenantNotFound):
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", id, err)
	}

	started := time.Now()
	db, err := o.provisioner.Create(ctx, id)
	if err != nil {
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", id, err)
	}
	// The template's build recorded the checksums of what it applied; a
	// template built for another control plane did not.
	o.recordChecksums(ctx, o.migrator.Versions())
	t, err := o.store.CreateProvisioned(ctx, Tenant{ID: id, DatabaseURL: db.URL}, o.latest,
		controlplane.Provisioned{Database: db.Name, Token: db.Token},
		func(ctx context.Context, tx pgx.Tx) error {
			return o.recordProvisionedRun(ctx, tx, id, o.latest, started)
		})
	if err != nil {
		if errors.Is(err, controlplane.ErrOutcomeUnknown) {
			// The tenant may be registered: its database stays.
			return Tenant{}, fmt.Errorf("provision tenant %s: %w; its database %s was kept: see whether the tenant is registered, and if not, drop the database", id, err, db.Name)
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		// The tenant is not registered: its database goes too.
		if derr := o.provisioner.Drop(cctx, id, db.Name, db.Token); derr != nil {
			return Tenant{}, fmt.Errorf("provision tenant %s: %w (and its new database %s could not be dropped: %v)", id, err, db.Name, derr)
		}
		return Tenant{}, fmt.Errorf("provision tenant %s: %w", id, err)
	}
	o.cache.drop(id)
	o.logger.Info("tenant provisioned", "tenant_id", id, "database", db.Name, "version", o.latest,
		"template_built", db.TemplateBuilt, "duration_ms", time.Since(started).Milliseconds())
	return t, nil
}

// DeprovisionTenant drops the database of tenant id, which ProvisionTenant
// created, and removes the tenant. It drops the database WITH (FORCE),
// ending its sessions. It returns ErrTenantNotFound for an unknown id and an
// error wrapping ErrNotProvisioned, dropping and removing nothing, for a
// tenant tenantmigrate did not provision (or whose URL was changed since),
// or when the database of that name on the provision server does not carry
// the mark ProvisionTenant put on it. A database already gone is not an
// error: a call that failed half-way can be repeated.
func (o *Orchestrator) DeprovisionTenant(ctx context.Context, id string) error {
	if o.provisioner == nil {
		return ErrProvisioningNotConfigured
	}
	p, err := o.store.GetProvisioned(ctx, id)
	if err != nil {
		return fmt.Errorf("deprovision tenant: %w", err)
	}
	if p.Database == "" {
		return fmt.Errorf("deprovision tenant %s: %w: it was registered with a database URL, or its URL changed since", id, ErrNotProvisioned)
	}
	if err := o.provisioner.Drop(ctx, id, p.Database, p.Token); err != nil {
		return fmt.Errorf("deprovision tenant %s: %w", id, err)
	}
	err = o.store.DeleteProvisioned(ctx, id, p)
	o.cache.drop(id)
	if errors.Is(err, controlplane.ErrStaleResult) {
		return fmt.Errorf("deprovision tenant %s: its database %s was dropped, but the tenant changed meanwhile and was left registered", id, p.Database)
	}
	if err != nil {
		return fmt.Errorf("deprovision tenant %s: %w", id, err)
	}
	o.logger.Info("tenant deprovisioned", "tenant_id", id, "database", p.Database)
	return nil
}

// recordProvisionedRun writes the run history's row of a provisioned
// tenant (trigger "provisioned", COMPLETED at version), in the transaction
// that registers it: both commit or neither does.
func (o *Orchestrator) recordProvisionedRun(ctx context.Context, tx pgx.Tx, id string, version int64, started time.Time) error {
	if err := o.history.RecordIn(ctx, tx, history.Run{
		TenantID:   id,
		ToVersion:  &version,
		Direction:  history.DirectionUp,
		Result:     history.ResultCompleted,
		StartedAt:  started,
		FinishedAt: time.Now(),
		Trigger:    "provisioned",
	}); err != nil {
		return fmt.Errorf("record the provisioning in the run history: %w", err)
	}
	return nil
}
