package controlplane

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// rotationStores are stores on one control plane: underA writes with key A,
// rotated with B and previous A, onlyB and onlyA with one key each.
type rotationStores struct {
	pool                          *pgxpool.Pool
	underA, rotated, onlyB, onlyA *Store
	a, b                          *Cipher
}

func newRotationStores(t *testing.T) rotationStores {
	t.Helper()
	pool := newTestPool(t, newTestDB(t))
	require.NoError(t, Migrate(testContext(t), pool))
	a, b := newCipher(t, secretA), newCipher(t, secretB)
	return rotationStores{
		pool: pool, a: a, b: b,
		underA:  NewStore(pool, a),
		rotated: NewStore(pool, newCipher(t, secretB, secretA)),
		onlyB:   NewStore(pool, b),
		onlyA:   NewStore(pool, a),
	}
}

// storedURL is a tenant's database_url and key_id as stored.
type storedURL struct {
	enc   []byte
	keyID *string
}

func readStored(t *testing.T, pool *pgxpool.Pool, id string) storedURL {
	t.Helper()
	var s storedURL
	require.NoError(t, pool.QueryRow(testContext(t),
		`SELECT database_url, key_id FROM tenantmigrate.tenants WHERE id = $1`, id).Scan(&s.enc, &s.keyID))
	return s
}

// insertLegacy stores a tenant as a release before key ids did: the same
// ciphertext format, under c's key, and no key_id.
func insertLegacy(t *testing.T, pool *pgxpool.Pool, c *Cipher, id, url string) {
	t.Helper()
	enc, err := c.Encrypt(url)
	require.NoError(t, err)
	_, err = pool.Exec(testContext(t), `INSERT INTO tenantmigrate.tenants (id, database_url) VALUES ($1, $2)`, id, enc)
	require.NoError(t, err)
}

func tenantURL(id string) string {
	return fmt.Sprintf("postgres://app:pw-%s@db.internal/%s", id, id)
}

// TestStoreRecordsKeyID: every write stores the current key's id; reads
// open rows under the current key, a previous one, or none recorded
// (written before key ids).
func TestStoreRecordsKeyID(t *testing.T) {
	t.Parallel()
	st := newRotationStores(t)
	ctx := testContext(t)

	_, err := st.underA.Create(ctx, Tenant{ID: "made-under-a", DatabaseURL: tenantURL("a")})
	require.NoError(t, err)
	require.Equal(t, st.a.KeyID(), *readStored(t, st.pool, "made-under-a").keyID)
	insertLegacy(t, st.pool, st.a, "legacy", tenantURL("legacy"))

	// The rotated store reads both, and writes under B.
	for _, id := range []string{"made-under-a", "legacy"} {
		got, err := st.rotated.Get(ctx, id)
		require.NoError(t, err)
		require.Contains(t, got.DatabaseURL, "db.internal")
	}
	_, err = st.rotated.Create(ctx, Tenant{ID: "made-under-b", DatabaseURL: tenantURL("b")})
	require.NoError(t, err)
	_, _, err = st.rotated.Upsert(ctx, Tenant{ID: "upserted", DatabaseURL: tenantURL("u")})
	require.NoError(t, err)
	// A schema-only change rewrites the URL under B too.
	_, err = st.rotated.Patch(ctx, "made-under-a", TenantPatch{Schema: ptr("tenant_a")})
	require.NoError(t, err)
	_, err = st.rotated.Patch(ctx, "legacy", TenantPatch{DatabaseURL: ptr(tenantURL("legacy2"))})
	require.NoError(t, err)
	for _, id := range []string{"made-under-b", "upserted", "made-under-a", "legacy"} {
		require.Equal(t, st.b.KeyID(), *readStored(t, st.pool, id).keyID, id)
		got, err := st.onlyB.Get(ctx, id)
		require.NoError(t, err, id)
		require.Contains(t, got.DatabaseURL, "db.internal")
	}
	got, err := st.onlyB.Get(ctx, "legacy")
	require.NoError(t, err)
	require.Equal(t, tenantURL("legacy2"), got.DatabaseURL)
}

// TestStoreRowNoKeyDecrypts: a row that no configured key decrypts fails
// the read of that tenant with an error naming it, and not its ciphertext;
// a list returns it without its URL; other tenants are read, and a new URL
// (PATCH) repairs it.
func TestStoreRowNoKeyDecrypts(t *testing.T) {
	t.Parallel()
	st := newRotationStores(t)
	ctx := testContext(t)
	_, err := st.underA.Create(ctx, Tenant{ID: "lost-key", DatabaseURL: tenantURL("lost")})
	require.NoError(t, err)
	_, err = st.onlyB.Create(ctx, Tenant{ID: "fine", DatabaseURL: tenantURL("fine")})
	require.NoError(t, err)
	enc := readStored(t, st.pool, "lost-key").enc

	_, err = st.onlyB.Get(ctx, "lost-key")
	require.ErrorIs(t, err, ErrDecrypt)
	require.ErrorContains(t, err, "get tenant lost-key: cannot decrypt tenant database URL")
	require.ErrorContains(t, err, "under the key with id "+st.a.KeyID()+", which is not configured")
	requireNoSecrets(t, err.Error(), enc)

	// A list fails only that row: it comes without its URL, saying why.
	listed, _, err := st.onlyB.List(ctx, 0, 10)
	require.NoError(t, err)
	require.Len(t, listed, 2)
	for _, lt := range listed {
		if lt.ID == "lost-key" {
			require.Empty(t, lt.DatabaseURL)
			require.Contains(t, lt.DecryptError, "cannot decrypt tenant database URL")
			requireNoSecrets(t, lt.DecryptError, enc)
		} else {
			require.Equal(t, tenantURL("fine"), lt.DatabaseURL)
			require.Empty(t, lt.DecryptError)
		}
	}

	_, err = st.onlyB.Get(ctx, "fine")
	require.NoError(t, err)
	state, err := st.onlyB.GetState(ctx, "lost-key")
	require.NoError(t, err, "the migration state needs no key")
	require.Equal(t, "lost-key", state.ID)

	// A schema change alone cannot keep a URL it cannot read; a new URL can.
	_, err = st.onlyB.Patch(ctx, "lost-key", TenantPatch{Schema: ptr("x")})
	require.ErrorIs(t, err, ErrDecrypt)
	_, err = st.onlyB.Patch(ctx, "lost-key", TenantPatch{DatabaseURL: ptr(tenantURL("found"))})
	require.NoError(t, err)
	got, err := st.onlyB.Get(ctx, "lost-key")
	require.NoError(t, err)
	require.Equal(t, tenantURL("found"), got.DatabaseURL)
}

// requireNoSecrets checks that msg shows no secret, password or ciphertext.
func requireNoSecrets(t *testing.T, msg string, enc []byte) {
	t.Helper()
	for _, s := range []string{secretA, secretB, secretC, "pw-", string(enc), fmt.Sprintf("%x", enc)} {
		require.NotContains(t, msg, s)
	}
}
