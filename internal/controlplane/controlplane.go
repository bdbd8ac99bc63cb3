// Package controlplane owns the control-plane database of tenantmigrate: the
// tenantmigrate.tenants table that lists every tenant and its migration state,
// the package's own schema migrations (plus River's, in the same schema), the
// encryption of tenant database URLs at rest, and NOTIFY-based change events
// that let callers invalidate caches of tenant state.
package controlplane

import "errors"

// Schema is the PostgreSQL schema that holds the control-plane tables, the
// goose version table of this package and River's tables.
const Schema = "tenantmigrate"

// NotifyChannel is the channel the tenants table triggers notify with the
// changed tenant's id as payload. An empty payload (sent on TRUNCATE) means
// "anything may have changed". See Store.Listen.
const NotifyChannel = "tenantmigrate_tenant_changed"

// ListenerApplicationName is the application_name of the dedicated connection
// Store.Listen holds, so operators can find it in pg_stat_activity.
const ListenerApplicationName = "tenantmigrate-listener"

// maxLastErrorLen is the maximum number of characters of a failure message
// that RecordFailure stores.
const maxLastErrorLen = 2000

var (
	// ErrTenantNotFound is returned by Store methods that address a tenant by
	// id when no tenant has that id.
	ErrTenantNotFound = errors.New("tenant not found")

	// ErrTenantExists is returned by Store.Create when a tenant with the same
	// id already exists.
	ErrTenantExists = errors.New("tenant already exists")

	// ErrNoEncryptionKey is returned by Store methods that store or return a
	// tenant database URL when the Store was made without a Cipher.
	ErrNoEncryptionKey = errors.New("tenant database URLs need an encryption key (at least 16 characters)")

	// ErrEncryptionKeyTooShort is returned by NewCipher for a secret of fewer
	// than MinSecretLen characters.
	ErrEncryptionKeyTooShort = errors.New("encryption key too short: use at least 16 characters")

	// ErrDecrypt is wrapped by the error of Cipher.Decrypt (and so of
	// Store.Get, Store.List and, per tenant, Store.Rekey) when no configured
	// key decrypts a stored URL, most often because it is under a key that
	// is neither the current one nor a previous one. The error says which
	// key id the row names, never the ciphertext.
	ErrDecrypt = errors.New("cannot decrypt tenant database URL")

	// ErrStaleResult is returned by RecordSuccess and RecordFailure when the
	// tenant changed since the run read it (RunOrigin): another URL or
	// schema, removed and registered again, or, for a failure, another run
	// recorded a result meanwhile. Nothing was written: the result describes
	// a target or a moment that is gone.
	ErrStaleResult = errors.New("tenant changed since the run began; result not recorded")
	// ErrTargetPinned is wrapped by Store.CreateProvisioned's error while the
	// fleet target is pinned below the version the new tenant would be
	// recorded at. Nothing was written.
	ErrTargetPinned = errors.New("the fleet target is pinned below the latest version, and a provisioned tenant would be above it: clear the target first (tenantmigrate target clear)")
	// ErrOutcomeUnknown is wrapped by Store.CreateProvisioned's error when
	// the registration's COMMIT got no reply and its outcome could not be
	// learnt: the tenant may be registered.
	ErrOutcomeUnknown = errors.New("whether the registration committed is unknown")

	// ErrInvalid is wrapped by the errors of ValidateTenantID,
	// ValidateSchemaName, ValidateDatabaseURL and of the Store methods that
	// validate their input, so callers can answer "bad request".
	ErrInvalid = errors.New("invalid")
)
