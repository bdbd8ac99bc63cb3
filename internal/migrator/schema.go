package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// maxIdentifierLength is PostgreSQL's NAMEDATALEN-1: longer names are silently truncated.
const maxIdentifierLength = 63

// ValidateSchemaName reports whether s may be used as a tenant schema (Target.Schema): 1 to 63
// characters, a lowercase ASCII letter or underscore followed by lowercase ASCII letters, digits
// or underscores. Names PostgreSQL reserves or uses for itself are rejected: those starting with
// "pg_", and "information_schema".
//
// "public" is rejected too: it is the shared default schema of every database, so a tenant in it
// would share its objects with whatever else lives there and would be reached by every session's
// default search_path. A tenant that owns a whole database uses an empty Target.Schema instead.
//
// SQL keywords are allowed ("user", "order"): the migrator always quotes the name.
func ValidateSchemaName(s string) error {
	if s == "" {
		return errors.New("invalid schema name: empty")
	}
	if len(s) > maxIdentifierLength {
		return fmt.Errorf("invalid schema name %q: longer than %d characters", s, maxIdentifierLength)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return fmt.Errorf("invalid schema name %q: must match [a-z_][a-z0-9_]*", s)
		}
	}
	switch {
	case len(s) >= 3 && s[:3] == "pg_":
		return fmt.Errorf("invalid schema name %q: the pg_ prefix is reserved for system schemas", s)
	case s == "information_schema":
		return fmt.Errorf("invalid schema name %q: reserved for the system", s)
	case s == "public":
		return fmt.Errorf("invalid schema name %q: the shared public schema cannot hold a tenant; use an empty schema for database-per-tenant", s)
	}
	return nil
}

// ensureSchema creates the tenant schema if it does not exist.
//
// It looks before it creates: CREATE SCHEMA IF NOT EXISTS checks the CREATE privilege on the
// database even when the schema exists, and a tenant role that owns its schema may lack it.
// Two sessions creating the same schema at once can both pass the look and the IF NOT EXISTS;
// the loser fails with a unique violation on pg_namespace (23505) or 42P06, which means the
// schema exists now.
func ensureSchema(ctx context.Context, db *sql.DB, schema string) error {
	var exists bool
	if err := db.QueryRowContext(ctx,
		`SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)`, schema,
	).Scan(&exists); err != nil {
		return fmt.Errorf("check schema %s: %w", schema, err)
	}
	if exists {
		return nil
	}
	_, err := db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P06") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create schema %s: %w", schema, err)
	}
	return nil
}
