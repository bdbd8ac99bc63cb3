package controlplane

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCipherRoundTrip(t *testing.T) {
	t.Parallel()
	c := testCipher(t)
	const plain = "postgres://app:s3cret-pw@db.internal:5432/tenant_a?sslmode=require"

	a, err := c.Encrypt(plain)
	require.NoError(t, err)
	b, err := c.Encrypt(plain)
	require.NoError(t, err)
	require.NotEqual(t, a, b, "each encryption uses a fresh nonce")
	require.False(t, bytes.Contains(a, []byte("s3cret-pw")))

	for _, enc := range [][]byte{a, b} {
		got, err := c.Decrypt(c.KeyID(), enc)
		require.NoError(t, err)
		require.Equal(t, plain, got)
	}

	// The same secret derives the same key.
	again, err := NewCipher(testSecret)
	require.NoError(t, err)
	got, err := again.Decrypt(again.KeyID(), a)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	empty, err := c.Encrypt("")
	require.NoError(t, err)
	got, err = c.Decrypt(c.KeyID(), empty)
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestCipherRejectsForeignOrDamagedCiphertext(t *testing.T) {
	t.Parallel()
	c := testCipher(t)
	other, err := NewCipher("another-secret-0123456789")
	require.NoError(t, err)
	enc, err := c.Encrypt("postgres://u:p@h/db")
	require.NoError(t, err)

	_, err = other.Decrypt(c.KeyID(), enc)
	require.ErrorIs(t, err, ErrDecrypt)

	tampered := bytes.Clone(enc)
	tampered[len(tampered)-1] ^= 1
	_, err = c.Decrypt(c.KeyID(), tampered)
	require.ErrorIs(t, err, ErrDecrypt)

	for _, short := range [][]byte{nil, {}, enc[:12], enc[:27]} {
		_, err = c.Decrypt(c.KeyID(), short)
		require.ErrorIs(t, err, ErrDecrypt)
	}
}

func TestNewCipherKeyLength(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		secret string
		ok     bool
	}{
		{"", false},
		{"short", false},
		{strings.Repeat("k", 15), false},
		{strings.Repeat("k", 16), true},
		{strings.Repeat("é", 16), true}, // characters, not bytes
		{strings.Repeat("é", 15), false},
		{strings.Repeat("k", 200), true},
	} {
		c, err := NewCipher(tc.secret)
		if tc.ok {
			require.NoError(t, err, "secret %q", tc.secret)
			require.NotNil(t, c)
			continue
		}
		require.ErrorIs(t, err, ErrEncryptionKeyTooShort, "secret %q", tc.secret)
		require.Contains(t, err.Error(), "16 characters")
	}
}

const (
	secretA = "rotation-secret-A-0123456789"
	secretB = "rotation-secret-B-0123456789"
	secretC = "rotation-secret-C-0123456789"
)

func newCipher(t *testing.T, secret string, previous ...string) *Cipher {
	t.Helper()
	c, err := NewCipher(secret, previous...)
	require.NoError(t, err)
	return c
}

// TestCipherKeyIDs: a key id is fixed by the secret alone, differs between
// secrets, and shows nothing of the secret or the AES key.
func TestCipherKeyIDs(t *testing.T) {
	t.Parallel()
	a, a2, b := newCipher(t, secretA), newCipher(t, secretA, secretB), newCipher(t, secretB, secretA)
	require.Len(t, a.KeyID(), KeyIDLen)
	require.Regexp(t, `^[0-9a-f]{16}$`, a.KeyID())
	require.Equal(t, a.KeyID(), a2.KeyID(), "previous keys do not change the current key's id")
	require.NotEqual(t, a.KeyID(), b.KeyID())
	require.NotContains(t, a.KeyID(), "rotation")

	// Duplicates are ignored; a previous key too short is refused, naming
	// which one without showing it.
	require.Equal(t, 2, newCipher(t, secretA, secretA, secretB, secretB).Keys())
	_, err := NewCipher(secretA, secretB, "short-secret")
	require.ErrorIs(t, err, ErrEncryptionKeyTooShort)
	require.ErrorContains(t, err, "previous encryption key 2 of 2")
	require.NotContains(t, err.Error(), "short-secret")
}

// TestCipherKeySelection: writes are under the current key; reads pick the
// key the row names, at one try; rows without a key id (stored before ids
// were recorded) or with a wrong one are opened by trying each key.
func TestCipherKeySelection(t *testing.T) {
	t.Parallel()
	const plain = "postgres://app:s3cret-pw@db.internal/tenant_a"
	a := newCipher(t, secretA)
	rotated := newCipher(t, secretB, secretC, secretA) // current B; A is the last previous key

	underA, err := a.Encrypt(plain)
	require.NoError(t, err)
	underB, err := rotated.Encrypt(plain)
	require.NoError(t, err)

	// The rotated cipher writes under B: A alone cannot read it.
	_, err = a.Decrypt(rotated.KeyID(), underB)
	require.ErrorIs(t, err, ErrDecrypt)
	got, tries, err := newCipher(t, secretB).decrypt(rotated.KeyID(), underB)
	require.NoError(t, err)
	require.Equal(t, plain, got)
	require.Equal(t, 1, tries)

	for _, tc := range []struct {
		name  string
		keyID string
		enc   []byte
		tries int
	}{
		{"CurrentKeyByID", rotated.KeyID(), underB, 1},
		{"PreviousKeyByID", a.KeyID(), underA, 1},
		{"NoKeyID", "", underA, 3},                      // B, C, then A
		{"WrongKeyID", rotated.KeyID(), underA, 3},      // B named, then C, A
		{"UnknownKeyID", "0123456789abcdef", underA, 3}, // not configured: each key
	} {
		got, tries, err := rotated.decrypt(tc.keyID, tc.enc)
		require.NoError(t, err, tc.name)
		require.Equal(t, plain, got, tc.name)
		require.Equal(t, tc.tries, tries, tc.name)
	}
}

// TestCipherNoKeyDecrypts: a row that no configured key opens gives an
// error wrapping ErrDecrypt that says which key id the row names, and holds
// neither the ciphertext nor a secret.
func TestCipherNoKeyDecrypts(t *testing.T) {
	t.Parallel()
	a := newCipher(t, secretA)
	enc, err := a.Encrypt("postgres://app:s3cret-pw@db/x")
	require.NoError(t, err)
	onlyB := newCipher(t, secretB, secretC)

	for _, tc := range []struct {
		keyID, says string
	}{
		{a.KeyID(), "under the key with id " + a.KeyID() + ", which is not configured"},
		{"", "stored before key ids were recorded"},
		{onlyB.KeyID(), "is configured but does not open it"},
	} {
		_, err := onlyB.Decrypt(tc.keyID, enc)
		require.ErrorIs(t, err, ErrDecrypt)
		msg := err.Error()
		require.Contains(t, msg, tc.says)
		require.Contains(t, msg, "none of the 2 configured encryption keys")
		for _, secret := range []string{secretA, secretB, secretC, "s3cret-pw", string(enc), fmt.Sprintf("%x", enc)} {
			require.NotContains(t, msg, secret)
		}
	}
}
