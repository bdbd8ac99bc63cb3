// Package redact keeps database passwords out of error messages, logs and
// displayed connection strings. It is the one scrubber of the module: it
// reads both forms pgx accepts, postgres:// URLs and libpq keyword=value
// strings, including strings pgx cannot parse, where pgx's own masking
// (pgconn.ParseConfigError) is only best effort.
//
// Masking is by replacement: every form in which a password may show in a
// message (Secrets) is replaced by a mask. The mask is made of a character
// that no secret contains, so masking one secret can never assemble another
// or itself. Whitespace-only passwords are not masked: they show as spacing.
package redact

import (
	"cmp"
	"errors"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Secrets returns every form in which the passwords of connString may show
// in a message, longest first: each value as written (quoted or not, percent-
// encoded or not), with its quotes, backslash escapes and percent-encoding
// removed, re-encoded, and pgx's parsed Password when connString parses. For a
// string pgx cannot parse, it takes every plausible reading: the widest user
// info of a URL and the parts of it pgx may read as a host, a port or a
// database, a password=... anywhere in the string (with spaces around '='
// or not), an unterminated quote running to the end, and the words libpq
// could not read as keyword=value (password=s3 cr3t). Short passwords and
// fragments mask their every occurrence in a message.
func Secrets(connString string) []string {
	set := lexicalSecrets(connString)
	if connString != "" {
		cfg, err := pgconn.ParseConfig(connString)
		switch {
		case err == nil:
			set.add(cfg.Password)
		case strings.Contains(connString, "://"):
			for _, f := range userinfoFragments(connString) {
				set.add(f)
			}
		}
	}
	return set.sorted()
}

// String returns s with every secret of the connection strings masked.
func String(s string, connStrings ...string) string {
	if s == "" {
		return s
	}
	var secrets []string
	for _, cs := range connStrings {
		secrets = append(secrets, Secrets(cs)...)
	}
	return scrub(s, secrets)
}

// Error returns err with the secrets of the connection strings masked in
// its message, or err itself when its message holds none. The result wraps
// err, so errors.Is and errors.As still see the chain; the errors in the
// chain keep their own, unmasked messages.
//
// A *pgconn.ParseConfigError in the chain needs no connection string: its
// ConnString is used, and pgx's best-effort masked rendering of it is
// replaced by URL's.
func Error(err error, connStrings ...string) error {
	if err == nil {
		return nil
	}
	orig := err.Error()
	msg := orig
	var secrets []string
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		msg = rewriteParseConfigError(msg, pce)
		secrets = append(secrets, Secrets(pce.ConnString)...)
	}
	for _, cs := range connStrings {
		secrets = append(secrets, Secrets(cs)...)
	}
	msg = scrub(msg, secrets)
	if msg == orig {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

// redactedError replaces the message of err, keeping err in the chain for
// errors.Is and errors.As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// maskChars are the candidates for the mask, in order of preference: the
// first that no secret contains is used, five times.
const maskChars = "x*#~"

// maskFor returns a mask that shares no character with any of the secrets,
// "xxxxx" unless a secret contains an 'x', or "" when every candidate is
// taken.
func maskFor(secrets []string) string {
	for _, c := range maskChars {
		if !slices.ContainsFunc(secrets, func(s string) bool { return strings.ContainsRune(s, c) }) {
			return strings.Repeat(string(c), 5)
		}
	}
	return ""
}

// scrub replaces every secret in s by the mask, longest secrets first. With
// a mask that shares no character with the secrets one pass suffices: what
// is left between masks is text the pass searched. With the empty mask,
// removing a secret can join two halves of another, so it repeats until
// nothing is found.
func scrub(s string, secrets []string) string {
	secrets = sortSecrets(secrets)
	mask := maskFor(secrets)
	for {
		found := false
		for _, sec := range secrets {
			if strings.Contains(s, sec) {
				s = strings.ReplaceAll(s, sec, mask)
				found = true
			}
		}
		if !found || mask != "" {
			return s
		}
	}
}

// sortSecrets returns the distinct secrets, longest first.
func sortSecrets(secrets []string) []string {
	secrets = slices.Clone(secrets)
	slices.SortFunc(secrets, func(a, b string) int {
		return cmp.Or(cmp.Compare(len(b), len(a)), strings.Compare(a, b))
	})
	return slices.Compact(secrets)
}
