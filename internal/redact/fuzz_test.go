package redact_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// FuzzRedact builds connection strings in both forms around a fuzzed
// password (quotes, spaces, backslashes, '=', '@', '%'), written as a user
// would: quoted or backslash-escaped in keyword=value strings, with spaces
// around '=' or not; percent-encoded in URLs, and also raw in a URL's user
// info. Each has another error (port=x) so that pgx rejects it. Neither the
// scrubbed parse error nor URL shows the password, nor a marker in its
// middle. With a valid port instead, the password pgx parses must be the
// fuzzed one (the strings are well formed) and URL must not show it.
func FuzzRedact(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""},
		{" ", ""},
		{"s3 ", " cr'et"},
		{`\`, `'`},
		{"a=b", "c=d"},
		{"p@", "@h"},
		{"%41", "%zz"},
		{"'", "' user=u"},
		{"a/", "?b#"},
		{"xxxxx", "x"},
	} {
		f.Add(seed[0], seed[1])
	}
	const marker = "S3CR3T"
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		password := prefix + marker + suffix
		for _, dsn := range connStrings(password, "x") {
			_, err := pgconn.ParseConfig(dsn)
			if err != nil {
				msg := redact.Error(fmt.Errorf("parse: %w", err)).Error()
				if strings.Contains(msg, marker) || strings.Contains(msg, password) {
					t.Fatalf("the error of %q shows the password %q: %s", dsn, password, msg)
				}
			}
			if got := redact.URL(dsn); strings.Contains(got, marker) {
				t.Fatalf("URL(%q) = %q shows the password %q", dsn, got, password)
			}
		}
		if strings.IndexByte(password, 0) >= 0 {
			return // pgx rejects a NUL byte in any form
		}
		for i, dsn := range connStrings(password, "5432") {
			cfg, err := pgconn.ParseConfig(dsn)
			if i == rawURL {
				if err != nil || cfg.Password != password {
					continue // a raw password can break the URL's structure
				}
			} else if err != nil || cfg.Password != password {
				t.Fatalf("ParseConfig(%q): password %q, err %v; want password %q", dsn, cfgPassword(cfg), err, password)
			}
			if got := redact.URL(dsn); strings.Contains(got, marker) {
				t.Fatalf("URL(%q) = %q shows the password %q", dsn, got, password)
			}
		}
	})
}

// rawURL is the index in connStrings of the URL with the password as is.
const rawURL = 0

// connStrings returns connection strings with password and port, in every
// form FuzzRedact tries.
func connStrings(password, port string) []string {
	q, e, p := kvQuoted(password), kvEscaped(password), percentEncoded(password)
	return []string{
		rawURL: "postgres://u:" + password + "@127.0.0.1:" + port + "/db",
		"postgres://u:" + p + "@127.0.0.1:" + port + "/db",
		"postgresql://u@127.0.0.1:" + port + "/db?password=" + p + "&sslmode=disable",
		"host=127.0.0.1 port=" + port + " password=" + q + " user=u",
		"host=127.0.0.1 port=" + port + " password=" + e + " user=u",
		"host=127.0.0.1 port=" + port + " password = " + q + " user=u",
		"host=127.0.0.1 port=" + port + " password= " + e + " user=u",
		"password =" + e + " host=127.0.0.1 port=" + port,
		"host=127.0.0.1 user=u port=" + port + " password=" + q,
	}
}

// kvQuoted quotes s as a keyword value: 'a b', with ' and \ escaped.
func kvQuoted(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// kvEscaped writes s as an unquoted keyword value: a backslash before each
// space, quote and backslash.
func kvEscaped(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r', '\v', '\f', '\'', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// percentEncoded encodes every byte of s but letters, digits and -._~.
func percentEncoded(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func cfgPassword(cfg *pgconn.Config) string {
	if cfg == nil {
		return ""
	}
	return cfg.Password
}

// FuzzURLDriverPassword checks URL against the driver: whatever pgconn takes
// as the password of a connection string it accepts does not show.
func FuzzURLDriverPassword(f *testing.F) {
	for _, seed := range []string{
		"postgres://app:pw-secret@db:5432/tenant",
		"postgres://app:pw-secret@db/tenant?sslmode=disable",
		"postgres://db/tenant?password=pw-secret",
		"postgres://db/tenant?p%61ssword=pw-secret",
		"postgres://app:pw?secret@db/tenant",
		"postgres://app:pw#secret@db/tenant",
		"postgresql://app:pw%40secret@db1,db2:5433/tenant",
		"host=db password=pw-secret",
		"host=db password = 'pw secret' user=u",
		`host=db password=pw\ secret`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := pgconn.ParseConfig(s)
		if err != nil || len(cfg.Password) < 6 || strings.Count(s, cfg.Password) != 1 {
			return
		}
		if got := redact.URL(s); strings.Contains(got, cfg.Password) {
			t.Fatalf("URL(%q) = %q shows the password %q", s, got, cfg.Password)
		}
	})
}
