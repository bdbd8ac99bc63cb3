package controlplane

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"unicode/utf8"
)

// MinSecretLen is the minimum number of characters of the secret NewCipher
// accepts.
const MinSecretLen = 16

// The HKDF salt and info strings are fixed: changing either changes the key
// derived from a secret and makes every stored URL undecryptable.
const (
	hkdfSalt = "tenantmigrate/controlplane/v1"
	hkdfInfo = "tenantmigrate tenant database_url AES-256-GCM"
)

// Cipher encrypts tenant database URLs at rest with AES-256-GCM. The key is
// derived from a secret with HKDF-SHA256. A ciphertext is the random 12-byte
// nonce followed by the sealed message. A Cipher is safe for concurrent use.
type Cipher struct {
	aead cipher.AEAD
}

// NewCipher derives an AES-256 key from secret, which must have at least
// MinSecretLen characters; it returns ErrEncryptionKeyTooShort otherwise.
func NewCipher(secret string) (*Cipher, error) {
	if utf8.RuneCountInString(secret) < MinSecretLen {
		return nil, ErrEncryptionKeyTooShort
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), []byte(hkdfSalt), hkdfInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive encryption key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("create AES cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("create GCM: %w", err)
	}
	return &Cipher{aead: aead}, nil
}

// Encrypt seals plain under a fresh random nonce and returns nonce|sealed.
func (c *Cipher) Encrypt(plain string) ([]byte, error) {
	nonce := make([]byte, c.aead.NonceSize(), c.aead.NonceSize()+len(plain)+c.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("read random nonce: %w", err)
	}
	return c.aead.Seal(nonce, nonce, []byte(plain), nil), nil
}

// Decrypt opens a ciphertext made by Encrypt. It returns ErrDecrypt when b is
// not a ciphertext of this key.
func (c *Cipher) Decrypt(b []byte) (string, error) {
	n := c.aead.NonceSize()
	if len(b) < n+c.aead.Overhead() {
		return "", ErrDecrypt
	}
	plain, err := c.aead.Open(nil, b[:n], b[n:], nil)
	if err != nil {
		return "", ErrDecrypt
	}
	return string(plain), nil
}
