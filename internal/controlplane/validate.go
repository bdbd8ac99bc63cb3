package controlplane

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
	"github.com/tenantmigrate/tenantmigrate/internal/schemaname"
)

var (
	// Kept in sync with the CHECK constraints of migrations/00001_tenants.sql.
	tenantIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
)

// ValidateTenantID checks that id is 1-63 characters of a-z, 0-9, '_' and
// '-', starting with a letter or a digit. The error wraps ErrInvalid.
func ValidateTenantID(id string) error {
	if !tenantIDRe.MatchString(id) {
		return fmt.Errorf("%w tenant id %s: use 1-63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit", ErrInvalid, quoteShort(id))
	}
	return nil
}

// ValidateSchemaName checks that name can be a tenant's schema, by the rule
// the migrator applies too (schemaname.Validate: no "pg_" prefix, none of
// information_schema, public and this package's Schema). The error wraps
// ErrInvalid.
func ValidateSchemaName(name string) error {
	if err := schemaname.Validate(name); err != nil {
		return invalidError{err}
	}
	return nil
}

// invalidError is an error of a validation rule that lives outside this
// package, matching ErrInvalid.
type invalidError struct{ err error }

func (e invalidError) Error() string        { return e.err.Error() }
func (e invalidError) Unwrap() error        { return e.err }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

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

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const maxLen = 70
	if len(s) > maxLen {
		return fmt.Sprintf("%q...", s[:maxLen])
	}
	return fmt.Sprintf("%q", s)
}
