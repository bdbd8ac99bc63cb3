package tenantmigrate

import (
	"context"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// ErrDecrypt is wrapped by the error of a tenant whose stored database URL
// no configured key (Config.EncryptionKey, Config.PreviousEncryptionKeys)
// decrypts: GetTenant, ListTenants, a migration run of that tenant, and each
// RekeyFailure. The message names the tenant and the id of the key the row
// is under, never the ciphertext or a key.
var ErrDecrypt = controlplane.ErrDecrypt

// DefaultRekeyPageSize is the default of RekeyOptions.PageSize (500).
const DefaultRekeyPageSize = tenanttype.DefaultRekeyPageSize

// The types of Orchestrator.Rekey, from the public package tenanttype.
type (
	// RekeyOptions configures Orchestrator.Rekey.
	RekeyOptions = tenanttype.RekeyOptions
	// RekeyResult counts what Orchestrator.Rekey did.
	RekeyResult = tenanttype.RekeyResult
	// RekeyFailure is a tenant Orchestrator.Rekey could not re-encrypt.
	RekeyFailure = tenanttype.RekeyFailure
)

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
	return o.store.Rekey(ctx, opts)
}
