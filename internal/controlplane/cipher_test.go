package controlplane

import (
	"bytes"
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
		got, err := c.Decrypt(enc)
		require.NoError(t, err)
		require.Equal(t, plain, got)
	}

	// The same secret derives the same key.
	again, err := NewCipher(testSecret)
	require.NoError(t, err)
	got, err := again.Decrypt(a)
	require.NoError(t, err)
	require.Equal(t, plain, got)

	empty, err := c.Encrypt("")
	require.NoError(t, err)
	got, err = c.Decrypt(empty)
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

	_, err = other.Decrypt(enc)
	require.ErrorIs(t, err, ErrDecrypt)

	tampered := bytes.Clone(enc)
	tampered[len(tampered)-1] ^= 1
	_, err = c.Decrypt(tampered)
	require.ErrorIs(t, err, ErrDecrypt)

	for _, short := range [][]byte{nil, {}, enc[:12], enc[:27]} {
		_, err = c.Decrypt(short)
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
