package controlplane

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
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
	// keyIDInfo derives a key's id from its secret. Another info string
	// gives an output independent of the AES key: the id says which secret
	// encrypted a row, and nothing about the AES key itself.
	keyIDInfo = "tenantmigrate encryption key id"
)

// KeyIDLen is the length of a key id (Cipher.KeyID): 8 bytes in hex.
const KeyIDLen = 16

// Cipher encrypts tenant database URLs at rest with AES-256-GCM under its
// current key, and decrypts them under the current key or any previous one,
// so that a fleet can move to a new key while rows still under the old one
// keep working (see Store.Rekey). Each key is derived from a secret with
// HKDF-SHA256. A ciphertext is the random 12-byte nonce followed by the
// sealed message: the format is the same for every key, and it carries no key
// id; the id of the key a row was encrypted under is stored beside it (the
// key_id column). A Cipher is safe for concurrent use.
type Cipher struct {
	keys []aeadKey // keys[0] is the current key
}

// aeadKey is one key of a Cipher.
type aeadKey struct {
	id   string
	aead cipher.AEAD
}

// NewCipher derives the current key from secret and one key from each of
// previous, which decrypt but never encrypt. Each secret must have at least
// MinSecretLen characters: NewCipher returns an error wrapping
// ErrEncryptionKeyTooShort otherwise, naming which (never showing it). A
// previous secret equal to the current one or to another previous one is
// ignored.
func NewCipher(secret string, previous ...string) (*Cipher, error) {
	c := &Cipher{}
	for i, s := range append([]string{secret}, previous...) {
		k, err := newAEADKey(s)
		if errors.Is(err, ErrEncryptionKeyTooShort) && i > 0 {
			return nil, fmt.Errorf("previous encryption key %d of %d: %w", i, len(previous), err)
		}
		if err != nil {
			return nil, err
		}
		if c.index(k.id) >= 0 {
			continue // the same secret twice (or ids colliding, 2^-64)
		}
		c.keys = append(c.keys, k)
	}
	return c, nil
}

// newAEADKey derives the AES-256-GCM key and the id of one secret.
func newAEADKey(secret string) (aeadKey, error) {
	if utf8.RuneCountInString(secret) < MinSecretLen {
		return aeadKey{}, ErrEncryptionKeyTooShort
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), []byte(hkdfSalt), hkdfInfo, 32)
	if err != nil {
		return aeadKey{}, fmt.Errorf("derive encryption key: %w", err)
	}
	id, err := hkdf.Key(sha256.New, []byte(secret), []byte(hkdfSalt), keyIDInfo, KeyIDLen/2)
	if err != nil {
		return aeadKey{}, fmt.Errorf("derive encryption key id: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return aeadKey{}, fmt.Errorf("create AES cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return aeadKey{}, fmt.Errorf("create GCM: %w", err)
	}
	return aeadKey{id: hex.EncodeToString(id), aead: aead}, nil
}

// KeyID is the id of the current key: KeyIDLen hex digits derived from its
// secret with HKDF. Every ciphertext Encrypt returns is under this key.
func (c *Cipher) KeyID() string { return c.keys[0].id }

// Keys is the number of keys: the current one and the previous ones.
func (c *Cipher) Keys() int { return len(c.keys) }

// index is the position of the key with id in c.keys, or -1.
func (c *Cipher) index(id string) int {
	for i, k := range c.keys {
		if k.id == id {
			return i
		}
	}
	return -1
}

// Encrypt seals plain under the current key and a fresh random nonce and
// returns nonce|sealed. Store it with KeyID.
func (c *Cipher) Encrypt(plain string) ([]byte, error) {
	aead := c.keys[0].aead
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("read random nonce: %w", err)
	}
	return aead.Seal(nonce, nonce, []byte(plain), nil), nil
}

// Decrypt opens a ciphertext made by Encrypt of a Cipher whose current key
// had keyID. It opens it with that key when c has it, without trying the
// others. With an empty keyID (a row stored before key ids were recorded),
// or when that key does not open it (a row rewritten by an older release
// that does not record key ids), it tries each key, the current one first.
// It returns an error wrapping ErrDecrypt when no key opens it; the error
// never holds the ciphertext.
func (c *Cipher) Decrypt(keyID string, b []byte) (string, error) {
	plain, _, err := c.decrypt(keyID, b)
	return plain, err
}

// decrypt is Decrypt that also says how many keys it tried (the tests check
// that a known key id costs one).
func (c *Cipher) decrypt(keyID string, b []byte) (plain string, tries int, err error) {
	hinted := -1
	if keyID != "" {
		hinted = c.index(keyID)
	}
	if hinted >= 0 {
		tries++
		if p, ok := open(c.keys[hinted].aead, b); ok {
			return p, tries, nil
		}
	}
	for i, k := range c.keys {
		if i == hinted {
			continue
		}
		tries++
		if p, ok := open(k.aead, b); ok {
			return p, tries, nil
		}
	}
	return "", tries, &decryptError{keyID: keyID, configured: hinted >= 0, keys: len(c.keys)}
}

// open opens nonce|sealed with aead.
func open(aead cipher.AEAD, b []byte) (string, bool) {
	n := aead.NonceSize()
	if len(b) < n+aead.Overhead() {
		return "", false
	}
	plain, err := aead.Open(nil, b[:n], b[n:], nil)
	if err != nil {
		return "", false
	}
	return string(plain), true
}

// decryptError says why no key opened a ciphertext. It wraps ErrDecrypt.
type decryptError struct {
	keyID      string // the row's key id, "" when it has none
	configured bool   // whether a configured key has keyID
	keys       int    // keys tried
}

func (e *decryptError) Error() string {
	var why string
	switch {
	case e.keyID == "":
		why = "it was stored before key ids were recorded"
	case e.configured:
		why = "the key it names (id " + e.keyID + ") is configured but does not open it (damaged, or rewritten under another key by a release without key ids)"
	default:
		why = "it is under the key with id " + e.keyID + ", which is not configured"
	}
	return fmt.Sprintf("%v: %s, and none of the %d configured encryption keys (current and previous) opens it", ErrDecrypt, why, e.keys)
}

func (e *decryptError) Unwrap() error { return ErrDecrypt }
