package controlplane

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// Kept in sync with the CHECK constraints of migrations/00001_tenants.sql.
	tenantIDRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	schemaNameRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

// redactedPassword replaces passwords in redacted URLs, as in
// url.URL.Redacted.
const redactedPassword = "xxxxx"

// ValidateTenantID checks that id is 1-63 characters of a-z, 0-9, '_' and
// '-', starting with a letter or a digit. The error wraps ErrInvalid.
func ValidateTenantID(id string) error {
	if !tenantIDRe.MatchString(id) {
		return fmt.Errorf("%w tenant id %s: use 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit", ErrInvalid, quoteShort(id))
	}
	return nil
}

// ValidateSchemaName checks that name can be a tenant's schema: 1-63
// characters of a-z, 0-9 and '_', not starting with a digit nor with "pg_",
// and none of information_schema and this package's Schema. The error wraps
// ErrInvalid.
func ValidateSchemaName(name string) error {
	switch {
	case !schemaNameRe.MatchString(name):
		return fmt.Errorf("%w schema name %s: use 1-63 characters of a-z, 0-9 and '_', not starting with a digit", ErrInvalid, quoteShort(name))
	case strings.HasPrefix(name, "pg_"):
		return fmt.Errorf("%w schema name %s: names starting with pg_ are reserved by PostgreSQL", ErrInvalid, quoteShort(name))
	case name == "information_schema" || name == Schema:
		return fmt.Errorf("%w schema name %s: reserved", ErrInvalid, quoteShort(name))
	}
	return nil
}

// ValidateDatabaseURL checks that s is a postgres:// or postgresql:// URL that
// the pgx driver accepts. The error wraps ErrInvalid and never contains the
// password: it shows the URL only through RedactURL.
func ValidateDatabaseURL(s string) error {
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return fmt.Errorf("%w database URL: it must start with postgres:// or postgresql://", ErrInvalid)
	}
	// The parse error is not wrapped: its text, and the errors it wraps, can
	// contain parts of the password of a malformed URL.
	if _, err := pgconn.ParseConfig(s); err != nil {
		return fmt.Errorf("%w database URL %s: the PostgreSQL driver cannot parse it (check the host, the port, the query parameters, and that special characters in the user and password are percent-encoded)", ErrInvalid, RedactURL(s))
	}
	return nil
}

// RedactURL returns the database URL s with its password replaced by
// "xxxxx": the password in the user info and the value of every query
// parameter whose key mentions "pass" (password, sslpassword). It does not
// rely on s being well formed: where URL parsers disagree about where the
// user info ends (an unencoded '@', '/', '?' or '#' in a password), it masks
// the widest reading, and a string that is not a URL at all is replaced
// entirely. The result is for messages and logs, not for connecting.
func RedactURL(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return "(redacted: not a URL)"
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")

	// libpq and pgx end the user info at the first '@' before any '/';
	// net/url at the last '@' before the first '/', '?' or '#'. Masking up to
	// the last '@' before the first '/' covers both readings.
	head := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		head = rest[:i]
	}
	userinfo := ""
	if i := strings.LastIndexByte(head, '@'); i >= 0 {
		user, _, hasPassword := strings.Cut(rest[:i], ":")
		userinfo = user + "@"
		if hasPassword {
			userinfo = user + ":" + redactedPassword + "@"
		}
		rest = rest[i+1:]
	}
	// An '@' left after the host means a malformed URL, for example with an
	// unencoded '/' in the password (postgres://u:pa/ss@host): drop all of
	// the user info.
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		userinfo = redactedPassword + "@"
		rest = rest[i+1:]
	}
	b.WriteString(userinfo)

	path, query, hasQuery := strings.Cut(rest, "?")
	b.WriteString(path)
	if !hasQuery {
		return b.String()
	}
	b.WriteByte('?')
	for i, pair := range strings.Split(query, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		key, _, hasValue := strings.Cut(pair, "=")
		if hasValue && isPasswordKey(key) {
			b.WriteString(key + "=" + redactedPassword)
			continue
		}
		b.WriteString(pair)
	}
	return b.String()
}

// isPasswordKey reports whether a raw query key names a password, in any
// case or percent-encoding.
func isPasswordKey(raw string) bool {
	return strings.Contains(strings.ToLower(percentDecodeLenient(raw)), "pass")
}

// percentDecodeLenient decodes the valid %XX escapes of s and keeps the rest
// as is, like the pgx URL parser.
func percentDecodeLenient(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// RedactedURL returns the tenant's database URL without its password; see
// RedactURL.
func (t Tenant) RedactedURL() string { return RedactURL(t.DatabaseURL) }

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const maxLen = 70
	if len(s) > maxLen {
		return fmt.Sprintf("%q...", s[:maxLen])
	}
	return fmt.Sprintf("%q", s)
}

// ScrubPassword replaces the password of databaseURL, as written and
// URL-escaped, in msg: for error texts that may quote a connection string.
func ScrubPassword(msg, databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil || u.User == nil {
		return msg
	}
	if pw, ok := u.User.Password(); ok && pw != "" {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
		if esc := url.QueryEscape(pw); esc != pw {
			msg = strings.ReplaceAll(msg, esc, "xxxxx")
		}
	}
	return msg
}
