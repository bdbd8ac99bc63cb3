package migrator

import (
	"context"
	"database/sql"
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
//
// A database target adopts the one table of the version table's name found in any schema of
// its database (a goose fleet may keep it outside public), so it must be able to tell a schema
// tenant's table from its own: the two look alike. Every schema tenant's version table
// therefore carries a mark, its comment (schemaTenantMark): set in the transaction that creates
// the table, and on the first run (Migrate, Force) of a schema tenant whose table predates the
// mark, checked by the query that already looks for the tenant's schema (ensureSchema), so no
// run pays a round trip for it but that one. A database target whose database holds a marked
// table is refused (VersionTableConflictError.SchemaTenants): it would have taken a schema
// tenant's table for its own, been reported at that tenant's version without its tables, and
// recorded its next versions there, which that tenant would then never get.

// DefaultVersionTableSchema is the schema of a database-per-tenant target's version table when
// the target has none yet and Config.VersionTable is not set.
const DefaultVersionTableSchema = "public"

// ErrVersionTableConflict is wrapped by the *VersionTableConflictError that Migrate, Pending
// and Applied return when the target's version table is ambiguous: more than one table with
// the version table's name exists in the target database, or Config.VersionTable names a table
// that does not exist while another one does, or (database-per-tenant) the database holds the
// version table of a schema tenant. Nothing was applied: applying would record the versions in
// a second table and run migrations again, or in another tenant's table. It is not retryable;
// an operator has to keep the right table and drop the other, or give the tenant a database
// of its own (see the error's text).
var ErrVersionTableConflict = errors.New("ambiguous version table")

// schemaTenantMarkPrefix begins the comment that marks a schema tenant's version table
// (schemaTenantMark). A database target never takes a table with such a comment for its own.
const schemaTenantMarkPrefix = "tenantmigrate: version table of schema tenant "

// schemaTenantMark is the comment of schema tenant schema's version table.
func schemaTenantMark(schema string) string { return schemaTenantMarkPrefix + schema }

// markStatement returns the statement that marks table t as schema tenant schema's.
// COMMENT takes no parameters: the text is a literal, its quotes and backslashes escaped.
func markStatement(t VersionTable, schema string) string {
	lit := strings.NewReplacer(`\`, `\\`, `'`, `''`).Replace(schemaTenantMark(schema))
	return "COMMENT ON TABLE " + t.String() + " IS E'" + lit + "'"
}

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
	// SchemaTenants are the version tables of schema-per-tenant tenants (marked as such by
	// tenantmigrate, see schemaTenantMark) in the database of a database-per-tenant target,
	// by schema; Found then holds the database's other tables of that name. A database
	// target is never migrated while its database holds one: it would take a schema tenant's
	// table for its own (the only one found) or be given one beside theirs. Empty otherwise.
	SchemaTenants []VersionTable
}

// maxNamedSchemaTenants is how many schema tenants' tables the error's text names.
const maxNamedSchemaTenants = 3

func (e *VersionTableConflictError) Error() string {
	if len(e.SchemaTenants) > 0 {
		return e.schemaTenantsError()
	}
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

// schemaTenantsError is Error when the database holds schema tenants' version tables.
func (e *VersionTableConflictError) schemaTenantsError() string {
	var schemas, tables []string
	for i, t := range e.SchemaTenants {
		if i == maxNamedSchemaTenants {
			schemas = append(schemas, fmt.Sprintf("%d more", len(e.SchemaTenants)-i))
			break
		}
		schemas = append(schemas, t.Schema)
		tables = append(tables, t.String())
	}
	whose := "schema tenant " + schemas[0]
	if len(e.SchemaTenants) > 1 {
		whose = fmt.Sprintf("%d schema tenants, %s", len(e.SchemaTenants), strings.Join(schemas, ", "))
	}
	what := "the database's only " + e.SchemaTenants[0].Name + " is " + whose + "'s (" + strings.Join(tables, ", ") + ")"
	if len(e.SchemaTenants) > 1 || len(e.Found) > 0 {
		what = "the database holds the version tables of " + whose + " (" + strings.Join(tables, ", ") + ")"
	}
	return fmt.Sprintf("%s: %s, and this database-per-tenant tenant would take such a table for its own; "+
		"nothing was applied: register this tenant with its own database or schema", ErrVersionTableConflict, what)
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
// More than one table is a *VersionTableConflictError. So is, for a database target, a
// database holding a schema tenant's table (marked, see schemaTenantMark), whether or not it
// holds another: taking the one found would record this tenant's versions in another
// tenant's table, and creating one beside it would give a schema tenant's database a second
// table, with this tenant's migrations applied to whatever its search_path names.
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
	// information_schema), the tables as pg_tables lists them, those of schema tenants apart.
	// json_agg keeps the query one row for both drivers.
	var found, schemaTenants []VersionTable
	var schemasJSON, markedJSON string
	if err := queryRow(ctx, findVersionTablesQuery, name, schemaTenantMarkPrefix).Scan(&schemasJSON, &markedJSON); err != nil {
		return VersionTable{}, false, fmt.Errorf("find version table: %w", err)
	}
	for _, list := range []struct {
		json   string
		tables *[]VersionTable
	}{{schemasJSON, &found}, {markedJSON, &schemaTenants}} {
		var schemas []string
		if err := json.Unmarshal([]byte(list.json), &schemas); err != nil {
			return VersionTable{}, false, fmt.Errorf("find version table: %w", err)
		}
		for _, s := range schemas {
			*list.tables = append(*list.tables, VersionTable{Schema: s, Name: name})
		}
	}

	switch {
	case len(schemaTenants) > 0:
		return VersionTable{}, false, &VersionTableConflictError{Found: found, Configured: configured, SchemaTenants: schemaTenants}
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

// findVersionTablesQuery lists, for a database target, the tables named $1 in every schema
// of the database but the system's own, as pg_tables would (relkind r or p): the schemas of
// those without the schema tenant's mark (comment beginning with $2), then the schemas of
// those with it, each a JSON array, by name.
const findVersionTablesQuery = `SELECT
		coalesce(json_agg(n.nspname ORDER BY n.nspname) FILTER (WHERE NOT t.marked), '[]')::text,
		coalesce(json_agg(n.nspname ORDER BY n.nspname) FILTER (WHERE t.marked), '[]')::text
	FROM (SELECT c.relnamespace, coalesce(pg_catalog.starts_with(d.description, $2), false) AS marked
		FROM pg_catalog.pg_class c
		LEFT JOIN pg_catalog.pg_description d
			ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
		WHERE c.relname = $1 AND c.relkind IN ('r', 'p')) t
	JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
	WHERE n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'`

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
//
// The version table of a schema tenant (schema set) is marked as its own when it is created,
// in the same transaction (see schemaTenantMark).
type tableStore struct {
	database.Store
	table  VersionTable
	schema string // the schema tenant's schema; "" for a database target
}

var _ database.StoreExtender = (*tableStore)(nil)

// newTableStore returns the store of version table t of the target whose schema is schema
// ("" for a database target).
func newTableStore(t VersionTable, schema string) (*tableStore, error) {
	store, err := database.NewStore(database.DialectPostgres, t.String())
	if err != nil {
		return nil, fmt.Errorf("create version store: %w", err)
	}
	return &tableStore{Store: store, table: t, schema: schema}, nil
}

// CreateVersionTable creates the table as goose does and, for a schema tenant, marks it as
// the schema tenant's. goose runs it in the transaction that also inserts version 0. The mark
// costs no round trip: goose's CREATE TABLE (recorded on a connection that runs nothing, as
// versionInserts records its INSERT) and the COMMENT go in one query without arguments, which
// pgx sends with the simple protocol.
func (s *tableStore) CreateVersionTable(ctx context.Context, db database.DBTxConn) error {
	if s.schema == "" {
		return s.Store.CreateVersionTable(ctx, db)
	}
	rec := &recording{}
	recDB := sql.OpenDB(recordingConnector{rec: rec})
	err := s.Store.CreateVersionTable(ctx, recDB)
	_ = recDB.Close()
	if err != nil || len(rec.statements) != 1 || len(rec.args[0]) > 0 {
		// Not one statement without arguments: goose's own, then the mark.
		if err := s.Store.CreateVersionTable(ctx, db); err != nil {
			return err
		}
		if _, err := db.ExecContext(ctx, markStatement(s.table, s.schema)); err != nil {
			return fmt.Errorf("mark version table %s as schema tenant %s's: %w", s.table, s.schema, err)
		}
		return nil
	}
	if _, err := db.ExecContext(ctx, rec.statements[0]+";\n"+markStatement(s.table, s.schema)); err != nil {
		return fmt.Errorf("create version table %s: %w", s.table, err)
	}
	return nil
}

// TableExists implements database.StoreExtender.
func (s *tableStore) TableExists(ctx context.Context, db database.DBTxConn) (bool, error) {
	return versionTableExists(ctx, db.QueryRowContext, s.table)
}
