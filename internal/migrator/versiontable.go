package migrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3/database"
)

// This file pins where a target's goose version table lives.
//
// goose's own PostgreSQL store names the table unqualified: it is created in, and looked for
// only in, current_schema(), the first existing schema of the session's search_path. That
// schema can change between two runs of one tenant: a search_path of "app,public" resolves to
// public until a migration creates app, and to app after; "$user" resolves to a schema that
// CREATE SCHEMA AUTHORIZATION creates; ALTER ROLE/DATABASE ... SET search_path changes the
// next session's. goose then finds no table, creates a second one and applies every migration
// again. So the migrator never lets search_path decide: every run, Pending, Applied and Inspect
// resolve the table with resolveVersionTable and use its schema-qualified name.

// DefaultVersionTableSchema is the schema of a database-per-tenant target's version table when
// the target has none yet and Config.VersionTable is not set.
const DefaultVersionTableSchema = "public"

// ErrVersionTableConflict is wrapped by the *VersionTableConflictError that Migrate, Pending
// and Applied return when the target's version table is ambiguous: more than one table with
// the version table's name exists in the target database, or Config.VersionTable names a table
// that does not exist while another one does. Nothing was applied: applying would record the
// versions in a second table and run migrations again. It is not retryable; an operator has
// to keep the right table and drop the other (see the error's text).
var ErrVersionTableConflict = errors.New("ambiguous version table")

// VersionTable is the schema-qualified name of a goose version table.
type VersionTable struct {
	// Schema is the table's schema.
	Schema string
	// Name is the table's name (goose's default is goose_db_version).
	Name string
}

// String returns the quoted, qualified name ("public"."goose_db_version").
func (t VersionTable) String() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// ParseVersionTable parses a schema-qualified table name, "schema.table". Both parts are
// plain identifiers (no quotes, no dots), 1 to 63 characters. An unqualified name is refused:
// its schema would be whatever search_path says at run time, which is the bug the explicit
// location prevents.
func ParseVersionTable(s string) (VersionTable, error) {
	schema, name, ok := strings.Cut(s, ".")
	if !ok || strings.Contains(name, ".") {
		return VersionTable{}, fmt.Errorf("invalid version table %q: want a schema-qualified name, schema.table (e.g. public.goose_db_version)", s)
	}
	for _, part := range []string{schema, name} {
		if part == "" || len(part) > maxIdentifierLength || strings.ContainsAny(part, "\"\x00") {
			return VersionTable{}, fmt.Errorf("invalid version table %q: schema and table must each be 1 to %d characters, without quotes", s, maxIdentifierLength)
		}
	}
	return VersionTable{Schema: schema, Name: name}, nil
}

// VersionTableConflictError says why a target's version table is ambiguous. It wraps
// ErrVersionTableConflict.
type VersionTableConflictError struct {
	// Found are the tables with the version table's name in the target database, by schema.
	Found []VersionTable
	// Configured is the table Config.VersionTable names; nil when it is not set.
	Configured *VersionTable
}

func (e *VersionTableConflictError) Error() string {
	names := make([]string, len(e.Found))
	for i, t := range e.Found {
		names[i] = t.String()
	}
	if e.Configured != nil && !slices.Contains(e.Found, *e.Configured) {
		return fmt.Sprintf("%s: the configured version table %s does not exist, but %s does; "+
			"nothing was applied (a new table would run every migration again): "+
			"configure the existing table, or move it", ErrVersionTableConflict, e.Configured, strings.Join(names, ", "))
	}
	return fmt.Sprintf("%s: the tenant database has %d version tables, %s; "+
		"nothing was applied: a run recorded its versions in one while another existed (migrations may have run twice). "+
		"Check which table holds the versions really applied, drop the other, then migrate again",
		ErrVersionTableConflict, len(e.Found), strings.Join(names, " and "))
}

// Unwrap returns ErrVersionTableConflict.
func (e *VersionTableConflictError) Unwrap() error { return ErrVersionTableConflict }

// queryRower is what resolveVersionTable needs of a connection: QueryRowContext of *sql.DB and
// *sql.Conn, or QueryRow of *pgx.Conn.
type queryRower[R interface{ Scan(...any) error }] func(ctx context.Context, sql string, args ...any) R

// resolveVersionTable returns the version table of target t and whether it exists: named
// defaultName (goose_db_version, or golang-migrate's schema_migrations) unless configured names one.
//
//   - Schema-per-tenant: the table inside the tenant schema, always; other schemas belong to
//     other tenants.
//   - Database-per-tenant with configured set: that table, provided no table of the same name
//     exists elsewhere in the database without it.
//   - Database-per-tenant otherwise: the one table of that name found in any schema of the
//     database (fleets adopted from goose keep theirs, wherever it is), else
//     DefaultVersionTableSchema, to be created.
//
// More than one table is a *VersionTableConflictError.
func resolveVersionTable[R interface{ Scan(...any) error }](
	ctx context.Context, queryRow queryRower[R], schema string, configured *VersionTable, defaultName string,
) (VersionTable, bool, error) {
	if schema != "" {
		t := schemaVersionTable(schema, configured, defaultName)
		exists, err := versionTableExists(ctx, queryRow, t)
		return t, exists, err
	}
	name := defaultName
	if configured != nil {
		name = configured.Name
	}

	// Every schema but the system's own (pg_catalog, pg_toast, temporary schemas and
	// information_schema). json_agg keeps the query one row for both drivers.
	var found []VersionTable
	var schemasJSON string
	if err := queryRow(ctx, `SELECT coalesce(json_agg(schemaname ORDER BY schemaname), '[]')::text
		FROM pg_catalog.pg_tables
		WHERE tablename = $1 AND schemaname NOT LIKE 'pg\_%' AND schemaname <> 'information_schema'`,
		name).Scan(&schemasJSON); err != nil {
		return VersionTable{}, false, fmt.Errorf("find version table: %w", err)
	}
	var schemas []string
	if err := json.Unmarshal([]byte(schemasJSON), &schemas); err != nil {
		return VersionTable{}, false, fmt.Errorf("find version table: %w", err)
	}
	for _, s := range schemas {
		found = append(found, VersionTable{Schema: s, Name: name})
	}

	switch {
	case len(found) > 1:
		return VersionTable{}, false, &VersionTableConflictError{Found: found, Configured: configured}
	case configured != nil && len(found) == 1 && found[0] != *configured:
		return VersionTable{}, false, &VersionTableConflictError{Found: found, Configured: configured}
	case configured != nil:
		return *configured, len(found) == 1, nil
	case len(found) == 1:
		return found[0], true, nil
	default:
		return VersionTable{Schema: DefaultVersionTableSchema, Name: name}, false, nil
	}
}

// schemaVersionTable is the version table of a schema-per-tenant target: inside the tenant
// schema, always (other schemas belong to other tenants), named defaultName unless configured
// names one. It needs no query: resolveVersionTable adds whether it exists.
func schemaVersionTable(schema string, configured *VersionTable, defaultName string) VersionTable {
	name := defaultName
	if configured != nil {
		name = configured.Name
	}
	return VersionTable{Schema: schema, Name: name}
}

// versionTableExistsQuery reports whether table $2 exists in schema $1, as pg_tables would
// (relkind r or p), with a plan that does not depend on the catalog's statistics.
//
// A database of schema tenants holds a table of the version table's name in every schema:
// 10,000 schemas, 10,000 pg_class rows named goose_db_version. Asked through the pg_tables view
// ("schemaname = $1 AND tablename = $2"), the planner may start from pg_class by relname alone
// and read every one of them, and it did in a new database until autovacuum first analyzed its
// pg_class (the statistics copied from the template say relname is unique): ~700 buffers and
// 6-7 ms per call at 300-600 schemas, three calls per tenant run (BENCHMARKS.md section 11).
// Here the schema's oid is looked up first (pg_namespace_nspname_index) and compared in the
// scan of pg_class_relname_nsp_index, whose two keys then find the one row, whatever the
// statistics say.
const versionTableExistsQuery = `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
	WHERE c.relname = $2 AND c.relkind IN ('r', 'p')
		AND c.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $1))`

// versionTableExists reports whether table t exists.
func versionTableExists[R interface{ Scan(...any) error }](ctx context.Context, queryRow queryRower[R], t VersionTable) (bool, error) {
	var exists bool
	if err := queryRow(ctx, versionTableExistsQuery, t.Schema, t.Name).Scan(&exists); err != nil {
		return false, fmt.Errorf("check version table: %w", err)
	}
	return exists, nil
}

// tableStore is goose's PostgreSQL store with the version table schema-qualified, so goose never
// depends on search_path to find or create it.
//
// goose's own store would find a qualified table, but its existence check looks only in
// current_schema() and would misread a schema name with quotes in a qualified name; this store
// checks pg_tables with parameters instead.
type tableStore struct {
	database.Store
	table VersionTable
}

var _ database.StoreExtender = (*tableStore)(nil)

func newTableStore(t VersionTable) (*tableStore, error) {
	store, err := database.NewStore(database.DialectPostgres, t.String())
	if err != nil {
		return nil, fmt.Errorf("create version store: %w", err)
	}
	return &tableStore{Store: store, table: t}, nil
}

// TableExists implements database.StoreExtender.
func (s *tableStore) TableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	return versionTableExists(ctx, db.QueryRowContext, s.table)
}
