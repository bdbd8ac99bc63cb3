package migrator

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantmigrate/tenantmigrate/internal/schemaname"
)

// maxIdentifierLength is PostgreSQL's NAMEDATALEN-1: longer names are silently truncated.
const maxIdentifierLength = schemaname.MaxLength

// ValidateSchemaName reports whether s may be used as a tenant schema (Target.Schema); see
// schemaname.Validate, the one rule the control plane applies too.
func ValidateSchemaName(s string) error { return schemaname.Validate(s) }

// ensureSchema creates the tenant schema of table, a schema target's version table, if it does
// not exist, and marks table as the schema tenant's (schemaTenantMark) if it exists without the
// mark: a table created before tenantmigrate marked them, or renamed with its schema.
//
// It looks before it creates: CREATE SCHEMA IF NOT EXISTS checks the CREATE privilege on the
// database even when the schema exists, and a tenant role that owns its schema may lack it.
// Two sessions creating the same schema at once can both pass the look and the IF NOT EXISTS;
// the loser fails with a unique violation on pg_namespace (23505) or 42P06, which means the
// schema exists now. The look also reads the version table's comment, so a run whose table is
// marked (every run but the first after an upgrade) pays nothing for the mark.
//
// where names the database and role db reaches (markVersionTable's key).
func (m *Migrator) ensureSchema(ctx context.Context, db *sql.DB, table VersionTable, where string, target slog.Attr) error {
	schema := table.Schema
	var exists bool
	var comment sql.NullString // NULL: no version table; "": one without a comment
	if err := db.QueryRowContext(ctx, ensureSchemaQuery, schema, table.Name).Scan(&exists, &comment); err != nil {
		return fmt.Errorf("check schema %s: %w", schema, err)
	}
	if comment.Valid && comment.String != schemaTenantMark(schema) {
		m.markVersionTable(ctx, db, table, where, target)
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

// ensureSchemaQuery reports whether schema $1 exists and the comment of its version table $2:
// NULL when there is no such table, empty when it has no comment. The table is looked up as in
// versionTableExistsQuery, through both keys of pg_class_relname_nsp_index, whatever the
// statistics say: a database of schema tenants holds one such table per schema.
const ensureSchemaQuery = `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n WHERE n.nspname = $1),
	(SELECT coalesce(d.description, '') FROM pg_catalog.pg_class c
		LEFT JOIN pg_catalog.pg_description d
			ON d.objoid = c.oid AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
		WHERE c.relname = $2 AND c.relkind IN ('r', 'p')
			AND c.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n WHERE n.nspname = $1))`

// markVersionTable marks schema tenant table.Schema's existing version table as its own, once.
// A failure does not fail the run: the tenant itself is unaffected, only a database target on
// the same database could not tell the table from its own. It is logged at warn level; one
// for lack of privilege (the table's owner is another role: COMMENT needs ownership) is
// logged and tried once per database, role, schema and process, so a fleet of such tables costs no
// statement per run.
func (m *Migrator) markVersionTable(ctx context.Context, db *sql.DB, table VersionTable, where string, target slog.Attr) {
	key := where + "\x00" + table.Schema
	if _, denied := m.unmarkable.Load(key); denied {
		return
	}
	_, err := db.ExecContext(ctx, markStatement(table, table.Schema))
	if err == nil {
		m.logger.DebugContext(ctx, "version table marked as the schema tenant's", target, slog.String("table", table.String()))
		return
	}
	if ctx.Err() != nil {
		return // the run ends with the context's error at its next statement
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == sqlInsufficientPrivilege {
		m.unmarkable.Store(key, struct{}{})
	}
	m.logger.WarnContext(ctx, "could not mark the version table as the schema tenant's; "+
		"a database-per-tenant tenant registered on the same database could take it for its own "+
		"(have the table's owner run the statement, or give the tenants' role ownership of it)",
		target, slog.String("table", table.String()), slog.String("statement", markStatement(table, table.Schema)),
		slog.String("err", err.Error()))
}

// sqlInsufficientPrivilege is SQLSTATE 42501, insufficient_privilege.
const sqlInsufficientPrivilege = "42501"
