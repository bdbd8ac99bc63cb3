package controlplane

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

var (
	// Kept in sync with the CHECK constraints of migrations/00001_tenants.sql.
	tenantIDRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	schemaNameRe = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
)

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
// password: it shows the URL only through redact.URL.
func ValidateDatabaseURL(s string) error {
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return fmt.Errorf("%w database URL: it must start with postgres:// or postgresql://", ErrInvalid)
	}
	// The parse error is not wrapped: its text, and the errors it wraps, can
	// contain parts of the password of a malformed URL.
	if _, err := pgconn.ParseConfig(s); err != nil {
		return fmt.Errorf("%w database URL %s: the PostgreSQL driver cannot parse it (check the host, the port, the query parameters, and that special characters in the user and password are percent-encoded)", ErrInvalid, redact.URL(s))
	}
	return nil
}

// RedactedURL returns the tenant's database URL without its password, for
// display; see redact.URL.
func (t Tenant) RedactedURL() string { return redact.URL(t.DatabaseURL) }

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const maxLen = 70
	if len(s) > maxLen {
		return fmt.Sprintf("%q...", s[:maxLen])
	}
	return fmt.Sprintf("%q", s)
}
