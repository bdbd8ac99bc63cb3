package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

// newKey is the key the tests rotate to from testKey.
const newKey = "rotated-encryption-key-0123456789"

// runKeys runs the command line against the fleet's control plane with the
// given keys (no --migrations).
func (f *fleet) runKeys(current, previous string, args ...string) result {
	f.t.Helper()
	args = append(args, "--database-url", f.url, "--encryption-key", current)
	if previous != "" {
		args = append(args, "--previous-encryption-keys", previous)
	}
	return runCLI(f.t, args...)
}

// storedRows is every tenant row as text with its xmin, and the stored
// ciphertexts in hex, for checking that nothing was written and that no
// ciphertext is printed.
func storedRows(t *testing.T, url string) (rows map[string]string, ciphertexts []string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.WithoutCancel(t.Context()))
	r, err := conn.Query(t.Context(), `SELECT id, xmin::text || ' ' || t::text, encode(database_url, 'hex') FROM tenantmigrate.tenants t`)
	require.NoError(t, err)
	rows = map[string]string{}
	var id, row, enc string
	_, err = pgx.ForEachRow(r, []any{&id, &row, &enc}, func() error {
		rows[id] = row
		ciphertexts = append(ciphertexts, enc)
		return nil
	})
	require.NoError(t, err)
	return rows, ciphertexts
}

// requireNoKeyMaterial checks that r printed no key and no ciphertext.
func requireNoKeyMaterial(t *testing.T, r result, ciphertexts []string) {
	t.Helper()
	out := r.stdout + r.stderr
	for _, s := range append([]string{testKey, newKey, "hunter2"}, ciphertexts...) {
		require.NotContains(t, out, s)
		if len(s) > 32 {
			require.NotContains(t, out, s[:32], "a ciphertext's start")
		}
	}
}

// TestRekeyCommand: tenants added under testKey; a dry run with the new key
// and testKey as previous counts and writes nothing; rekey moves them all;
// the new key alone then reads them; testKey alone refuses, naming each
// tenant, exit 1, printing no key or ciphertext.
func TestRekeyCommand(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	for i := range 3 {
		f.add(fmt.Sprintf("t%d", i), fmt.Sprintf("postgres://app:hunter2@db.example.com/t%d", i))
	}
	before, encs := storedRows(t, f.url)

	r := f.runKeys(newKey, testKey, "rekey", "--dry-run")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "dry run: 3 to rekey, 0 already under the current key, 0 failed; nothing written")
	after, _ := storedRows(t, f.url)
	require.Equal(t, before, after, "a dry run wrote")
	requireNoKeyMaterial(t, r, encs)

	// A tenant added with the new key is already current.
	r = f.runKeys(newKey, testKey, "tenants", "add", "t3", "postgres://app:hunter2@db.example.com/t3")
	requireCode(t, 0, r)
	r = f.runKeys(newKey, testKey, "rekey", "--page-size", "2")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "3 rekeyed, 1 already under the current key, 0 failed")
	require.Contains(t, r.stdout, "every tenant is under the current key")
	requireNoKeyMaterial(t, r, encs)

	r = f.runKeys(newKey, "", "tenants", "list")
	requireCode(t, 0, r)
	require.Len(t, strings.Split(strings.TrimSpace(r.stdout), "\n"), 5, r.stdout)
	r = f.runKeys(newKey, "", "rekey", "--dry-run")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "0 to rekey, 4 already under the current key, 0 failed")

	// The old key alone: each tenant refused by id.
	_, encs = storedRows(t, f.url)
	r = f.runKeys(testKey, "", "rekey")
	requireCode(t, 1, r)
	for i := range 4 {
		require.Contains(t, r.stdout, fmt.Sprintf("failed: tenant t%d: cannot decrypt tenant database URL", i))
	}
	require.Contains(t, r.stdout, "0 rekeyed, 0 already under the current key, 4 failed")
	require.Contains(t, r.stderr, "4 tenants could not be rekeyed: t0, t1, t2, t3")
	require.Contains(t, r.stderr, "--previous-encryption-keys")
	requireNoKeyMaterial(t, r, encs)
	r = f.runKeys(testKey, "", "tenants", "get", "t2")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "tenant t2: cannot decrypt")
	requireNoKeyMaterial(t, r, encs)
}

// TestPreviousEncryptionKeysFlag: previous keys need a current key and 16
// characters each; the errors never show a key.
func TestPreviousEncryptionKeysFlag(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	const short = "tooshort-secret"
	for _, args := range [][]string{
		{"status", "--database-url", f.url, "--previous-encryption-keys", testKey},
		{"rekey", "--database-url", f.url, "--encryption-key", newKey, "--previous-encryption-keys", testKey + "," + short},
		{"tenants", "list", "--database-url", f.url, "--encryption-key", newKey, "--previous-encryption-keys", short},
	} {
		r := runCLI(t, args...)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, "--previous-encryption-keys (PREVIOUS_ENCRYPTION_KEYS)")
		requireNoKeyMaterial(t, r, nil)
		require.NotContains(t, r.stderr, short)
	}
}

// TestPreviousEncryptionKeysEnv: PREVIOUS_ENCRYPTION_KEYS is read as the
// flag is, comma-separated, spaces and empty entries ignored. Not parallel:
// t.Setenv.
func TestPreviousEncryptionKeysEnv(t *testing.T) {
	f := newFleet(t)
	const third = "third-encryption-key-0123456789"
	f.add("old", "postgres://app:hunter2@db.example.com/old")
	requireCode(t, 0, f.runKeys(third, "", "tenants", "add", "third", "postgres://app@db.example.com/third"))
	t.Setenv("PREVIOUS_ENCRYPTION_KEYS", " "+testKey+" , "+third+",")
	r := f.runKeys(newKey, "", "rekey")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "2 rekeyed, 0 already under the current key, 0 failed")
}
