package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantmigrate/tenantmigrate/internal/schemaname"
)

// maxIdentifierLength is PostgreSQL's NAMEDATALEN-1: longer names are silently truncated.
const maxIdentifierLength = schemaname.MaxLength

// ValidateSchemaName reports whether s may be used as a tenant schema (Target.Schema); see
// schemaname.Validate, the one rule the control plane applies too.
func ValidateSchemaName(s string) error { return schemaname.Validate(s) }

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
