package tenantmigrate

import (
	"context"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

// ErrDecrypt is wrapped by the error of a tenant whose stored database URL
// no configured key (Config.EncryptionKey, Config.PreviousEncryptionKeys)
// decrypts: GetTenant, ListTenants, a migration run of that tenant, and each
// RekeyFailure. The message names the tenant and the id of the key the row
// is under, never the ciphertext or a key.
var ErrDecrypt = controlplane.ErrDecrypt

// DefaultRekeyPageSize is the default of RekeyOptions.PageSize.
const DefaultRekeyPageSize = controlplane.DefaultRekeyPageSize

// RekeyOptions configures Orchestrator.Rekey.
type RekeyOptions struct {
	// DryRun counts what a run would do, decrypting every row not under the
	// current key, and writes nothing.
	DryRun bool
	// PageSize is the number of tenants read and rewritten per statement.
	// Defaults to DefaultRekeyPageSize (500).
	PageSize int
	// OnPage, when set, is called after each page with the counts so far.
	OnPage func(RekeyResult)
}

// RekeyResult counts what Orchestrator.Rekey did.
type RekeyResult struct {
	// Rekeyed is the number of tenants whose URL was re-encrypted under the
	// current key (with DryRun: would be).
	Rekeyed int
	// AlreadyCurrent is the number of tenants found under the current key.
	// Each tenant is counted once, in one of the three counts, as it was
	// when Rekey reached it; tenants added during the run may be missed
	// (they are under the current key of their writer).
	AlreadyCurrent int
	// Failed are the tenants that could not be re-encrypted, left as they
	// were: no configured key decrypts their URL (Err wraps ErrDecrypt), or
	// it changed concurrently at every attempt.
	Failed []RekeyFailure
}

// RekeyFailure is a tenant Orchestrator.Rekey could not re-encrypt.
type RekeyFailure struct {
	TenantID string
	// Err names the tenant and says why; it never holds the URL, its
	// ciphertext or a key.
	Err error
}

// Rekey re-encrypts under Config.EncryptionKey the database URL of every
// tenant stored under another key (one of Config.PreviousEncryptionKeys, or
// a row written before key ids were recorded), page by page. Once it reports
// no failure, and every instance writes with the same EncryptionKey, the
// previous keys can be dropped.
//
// It is safe while servers run and write: each page is rewritten with one
// conditional UPDATE of database_url and key_id only, applied only where
// database_url is still what it read, so migration state recorded meanwhile
// is kept and a URL changed meanwhile wins. It is resumable: rerun after an
// interruption, it finds only the rows still under another key. A tenant
// whose URL no configured key decrypts fails alone, in RekeyResult.Failed.
// The error is for the control plane failing, returned with the counts of
// what was done before; it is ErrNoEncryptionKey without EncryptionKey.
// Rekey works on a ReadOnly Orchestrator (it writes only what it is asked
// to).
func (o *Orchestrator) Rekey(ctx context.Context, opts RekeyOptions) (RekeyResult, error) {
	cpOpts := controlplane.RekeyOptions{DryRun: opts.DryRun, PageSize: opts.PageSize}
	if opts.OnPage != nil {
		cpOpts.OnPage = func(r controlplane.RekeyResult) { opts.OnPage(rekeyResult(r)) }
	}
	res, err := o.store.Rekey(ctx, cpOpts)
	return rekeyResult(res), err
}

// rekeyResult converts the control plane's counts.
func rekeyResult(r controlplane.RekeyResult) RekeyResult {
	out := RekeyResult{Rekeyed: r.Rekeyed, AlreadyCurrent: r.AlreadyCurrent}
	for _, f := range r.Failed {
		out.Failed = append(out.Failed, RekeyFailure{TenantID: f.TenantID, Err: f.Err})
	}
	return out
}
