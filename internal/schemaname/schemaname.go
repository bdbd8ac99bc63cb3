// Package schemaname holds the one rule for tenant schema names
// (schema-per-tenant), shared by the control plane, which stores them, and
// the migrator, which creates and migrates them: a name one accepts, the
// other must too.
package schemaname

import (
	"errors"
	"fmt"
	"strconv"
)

// MaxLength is PostgreSQL's NAMEDATALEN-1: longer names are silently
// truncated.
const MaxLength = 63

// Validate reports whether s may be a tenant schema: 1 to 63 characters, a
// lowercase ASCII letter or underscore followed by lowercase ASCII letters,
// digits or underscores. Refused as well:
//   - names PostgreSQL reserves or uses for itself: those starting with
//     "pg_", and "information_schema";
//   - "public", the shared default schema of every database: a tenant in it
//     would share its objects with whatever else lives there and be reached
//     by every session's default search_path (a tenant that owns a whole
//     database has no schema instead);
//   - "tenantmigrate", the control plane's own schema.
//
// SQL keywords are allowed ("user", "order"): names are always quoted.
func Validate(s string) error {
	if s == "" {
		return errors.New("invalid schema name: empty")
	}
	if len(s) > MaxLength {
		return fmt.Errorf("invalid schema name %s: longer than %d characters", quote(s), MaxLength)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return fmt.Errorf("invalid schema name %s: use 1-63 characters of a-z, 0-9 and '_', not starting with a digit", quote(s))
		}
	}
	switch {
	case len(s) >= 3 && s[:3] == "pg_":
		return fmt.Errorf("invalid schema name %s: the pg_ prefix is reserved for system schemas", quote(s))
	case s == "information_schema", s == "tenantmigrate":
		return fmt.Errorf("invalid schema name %s: reserved", quote(s))
	case s == "public":
		return fmt.Errorf("invalid schema name %s: the shared public schema cannot hold a tenant; use no schema for database-per-tenant", quote(s))
	}
	return nil
}

// quote quotes s for an error message, cut to 64 bytes: a hostile name may be
// huge.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "…"
	}
	return strconv.Quote(s)
}
