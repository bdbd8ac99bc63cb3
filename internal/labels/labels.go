// Package labels holds tenant labels (a string-to-string map per tenant),
// their validation, kubectl-style label arguments ("k=v", "k-") and
// equality-based selectors ("k=v,k2!=v2,k3,!k4") with the SQL that answers
// them from the tenants table's labels column through its GIN index.
package labels

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// Limits of a tenant's labels.
const (
	// MaxKeyLen is the longest label key, in characters.
	MaxKeyLen = 63
	// MaxValueLen is the longest label value, in characters.
	MaxValueLen = 255
	// MaxLabels is the most labels one tenant has.
	MaxLabels = 32
)

// ErrInvalid is wrapped by every validation and parse error of this
// package.
var ErrInvalid = errors.New("invalid")

// ValidateKey checks that key is 1-63 characters of a-z, 0-9, '_', '.', '-'
// and '/'. The error wraps ErrInvalid and names the key.
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKeyLen || strings.IndexFunc(key, func(r rune) bool { return !keyChar(r) }) >= 0 {
		return fmt.Errorf("%w label key %s: use 1-%d characters of a-z, 0-9, '_', '.', '-' and '/'", ErrInvalid, quote(key), MaxKeyLen)
	}
	return nil
}

func keyChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-' || r == '/'
}

// ValidateValue checks the value of label key: valid UTF-8 of at most 255
// characters, without NUL (which PostgreSQL's jsonb cannot hold). The error
// wraps ErrInvalid and names the label.
func ValidateValue(key, value string) error {
	switch {
	case !utf8.ValidString(value) || strings.IndexByte(value, 0) >= 0:
		return fmt.Errorf("%w value of label %s: it must be UTF-8 text without NUL", ErrInvalid, quote(key))
	case utf8.RuneCountInString(value) > MaxValueLen:
		return fmt.Errorf("%w value of label %s: %d characters, at most %d allowed", ErrInvalid, quote(key), utf8.RuneCountInString(value), MaxValueLen)
	}
	return nil
}

// Validate checks a tenant's labels: at most MaxLabels, each key and value
// valid. Keys are checked in sorted order, so the error is deterministic.
func Validate(m map[string]string) error {
	if len(m) > MaxLabels {
		return fmt.Errorf("%w labels: %d labels, at most %d allowed per tenant", ErrInvalid, len(m), MaxLabels)
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if err := ValidateKey(k); err != nil {
			return err
		}
		if err := ValidateValue(k, m[k]); err != nil {
			return err
		}
	}
	return nil
}

// Merge returns cur with the changes of patch applied: a nil value removes
// the key, any other sets it. cur is not modified. The result is not
// validated.
func Merge(cur map[string]string, patch map[string]*string) map[string]string {
	out := maps.Clone(cur)
	if out == nil {
		out = map[string]string{}
	}
	for k, v := range patch {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = *v
		}
	}
	return out
}

// ParseArgs parses kubectl-style label arguments: "k=v" sets k to v (v may
// be empty), "k-" removes k. It returns the patch (nil values remove), with
// every key and value validated; a key both set and removed is an error.
func ParseArgs(args []string) (map[string]*string, error) {
	out := make(map[string]*string, len(args))
	for _, a := range args {
		var (
			key string
			val *string
		)
		if k, v, ok := strings.Cut(a, "="); ok {
			key, val = k, &v
		} else if k, ok := strings.CutSuffix(a, "-"); ok {
			key = k
		} else {
			return nil, fmt.Errorf("%w label argument %s: use KEY=VALUE to set a label or KEY- to remove it", ErrInvalid, quote(a))
		}
		if err := ValidateKey(key); err != nil {
			return nil, err
		}
		if val != nil {
			if err := ValidateValue(key, *val); err != nil {
				return nil, err
			}
		}
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%w label arguments: label %s given more than once", ErrInvalid, quote(key))
		}
		out[key] = val
	}
	return out, nil
}

// quote quotes s for an error message, cut to a readable length.
func quote(s string) string {
	const maxLen = 70
	if len(s) > maxLen {
		return fmt.Sprintf("%q...", strings.ToValidUTF8(s[:maxLen], ""))
	}
	return fmt.Sprintf("%q", s)
}
