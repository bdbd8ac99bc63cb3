package tenanttype

// DefaultRekeyPageSize is the number of tenants a rekey reads and rewrites
// per statement when RekeyOptions.PageSize is 0.
const DefaultRekeyPageSize = 500

// RekeyOptions configures a rekey (tenantmigrate's Orchestrator.Rekey): the
// re-encryption under the current key of the database URLs stored under
// another one.
type RekeyOptions struct {
	// DryRun counts what a run would do, decrypting every row not under the
	// current key, and writes nothing.
	DryRun bool
	// PageSize is the number of tenants read and rewritten per statement.
	// Defaults to DefaultRekeyPageSize (500); capped at the control plane's
	// largest page (10,000).
	PageSize int
	// OnPage, when set, is called after each page with the counts so far.
	OnPage func(RekeyResult)
}

// RekeyResult counts what a rekey did.
type RekeyResult struct {
	// Rekeyed is the number of tenants whose URL was re-encrypted under the
	// current key (with DryRun: would be).
	Rekeyed int
	// AlreadyCurrent is the number of tenants found under the current key.
	// Each tenant is counted once, in one of the three counts, as it was
	// when its page was read (or, when it changed before its write, after);
	// tenants added during the run may be missed (they are under the current
	// key of their writer).
	AlreadyCurrent int
	// Failed are the tenants that could not be re-encrypted, left as they
	// were, in the order found: no configured key decrypts their URL (Err
	// wraps tenantmigrate.ErrDecrypt), or it changed concurrently at every
	// attempt.
	Failed []RekeyFailure
}

// RekeyFailure is a tenant a rekey could not re-encrypt.
type RekeyFailure struct {
	TenantID string
	// Err names the tenant and says why; it never holds the URL, its
	// ciphertext or a key.
	Err error
}
