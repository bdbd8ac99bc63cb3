package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
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

// schemaStore is goose's PostgreSQL store with the version table qualified by the tenant schema
// ("tenant"."goose_db_version"), so goose never depends on search_path to find it.
//
// goose's own PostgreSQL store does find an unqualified table through search_path, but its
// existence check looks only in current_schema() and would misread a schema name with quotes in
// a qualified table name; this store checks pg_tables with parameters instead.
type schemaStore struct {
	database.Store
	schema string
}

var _ database.StoreExtender = (*schemaStore)(nil)

func newSchemaStore(schema string) (*schemaStore, error) {
	table := pgx.Identifier{schema, goose.DefaultTablename}.Sanitize()
	store, err := database.NewStore(database.DialectPostgres, table)
	if err != nil {
		return nil, fmt.Errorf("create version store: %w", err)
	}
	return &schemaStore{Store: store, schema: schema}, nil
}

// TableExists implements database.StoreExtender.
func (s *schemaStore) TableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	return versionTableExists(ctx, db.QueryRowContext, s.schema)
}

// versionTableExists reports whether goose_db_version exists in schema, or, for an empty schema,
// in current_schema() (what goose's PostgreSQL store checks for an unqualified table).
func versionTableExists[R interface{ Scan(...any) error }](
	ctx context.Context,
	queryRow func(ctx context.Context, sql string, args ...any) R,
	schema string,
) (bool, error) {
	var exists bool
	var err error
	if schema == "" {
		err = queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
			WHERE schemaname = current_schema() AND tablename = $1)`,
			goose.DefaultTablename).Scan(&exists)
	} else {
		err = queryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
			WHERE schemaname = $1 AND tablename = $2)`,
			schema, goose.DefaultTablename).Scan(&exists)
	}
	if err != nil {
		return false, fmt.Errorf("check version table: %w", err)
	}
	return exists, nil
}
