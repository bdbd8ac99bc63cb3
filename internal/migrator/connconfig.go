package migrator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// defaultConnectTimeout bounds connecting to a tenant whose URL sets no
// connect_timeout: a host that accepts TCP and never answers would otherwise
// hold a worker for the whole job timeout.
const defaultConnectTimeout = 10 * time.Second

// connectionCheckInterval is PostgreSQL's client_connection_check_interval in migration sessions
// (PostgreSQL 14 and later): while a statement runs, the server checks this often that the client
// is still there and, when its process died, cancels the statement and ends the session, releasing
// the tenant's migration lock at once instead of after the statement (an index build may take an
// hour). The run that takes over the tenant, after its instance's heartbeats stopped, then gets the
// lock in seconds.
const connectionCheckInterval = "1s"

// defaultApplicationName is the application_name of migration sessions whose URL sets none, so
// they are recognisable in pg_stat_activity.
const defaultApplicationName = "tenantmigrate"

// connConfig parses the target's URL and adds the session parameters of a migration run.
//
// Parameters in the URL win over the Migrator's defaults (lock_timeout, statement_timeout,
// application_name, connect_timeout: 10s when the URL sets none or 0), except search_path for a
// schema target: the schema is the point of it.
func (m *Migrator) connConfig(t Target) (*pgx.ConnConfig, error) {
	if t.Schema != "" {
		if err := ValidateSchemaName(t.Schema); err != nil {
			return nil, err
		}
	}
	if t.DatabaseURL == "" {
		return nil, errors.New("target database url is empty")
	}
	cfg, err := pgx.ParseConfig(t.DatabaseURL)
	if err != nil {
		// pgx's ParseConfigError masks the password best effort only (not password= s3cr3t).
		return nil, redact.Error(fmt.Errorf("parse target database url: %w", err), t.DatabaseURL)
	}

	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}

	// A migration session is short-lived and runs few distinct queries: skip pgx's
	// prepare-and-cache round trip unless the URL chose a mode (default_query_exec_mode).
	if cfg.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement {
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
	}

	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	params := cfg.RuntimeParams
	inOptions := optionsSettings(params["options"])
	setDefault := func(key, value string) {
		if _, ok := params[key]; !ok && !inOptions[key] {
			params[key] = value
		}
	}
	setDefault("application_name", defaultApplicationName)
	setDefault("lock_timeout", m.lockTimeoutParam)
	setDefault("statement_timeout", m.stmtTimeoutParam)
	if _, ok := params["client_connection_check_interval"]; !ok && !inOptions["client_connection_check_interval"] {
		// Not a startup parameter: servers before PostgreSQL 14 would refuse the connection.
		afterConnect := cfg.AfterConnect
		cfg.AfterConnect = func(ctx context.Context, conn *pgconn.PgConn) error {
			if afterConnect != nil {
				if err := afterConnect(ctx, conn); err != nil {
					return err
				}
			}
			return setConnectionCheck(ctx, conn)
		}
	}
	if t.Schema != "" {
		// Only the tenant schema (pg_catalog is always searched implicitly): unqualified names
		// in migrations must never resolve to, or be created in, a shared schema like public.
		params["search_path"] = pgx.Identifier{t.Schema}.Sanitize()
	}
	return cfg, nil
}

// setConnectionCheck sets client_connection_check_interval on a new session, where the server
// knows it (PostgreSQL 14 and later; older ones answer 42704 undefined_object and keep going
// without).
func setConnectionCheck(ctx context.Context, conn *pgconn.PgConn) error {
	err := conn.Exec(ctx, "SET client_connection_check_interval = '"+connectionCheckInterval+"'").Close()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42704" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("set client_connection_check_interval: %w", err)
	}
	return nil
}

// optionsSettings returns the names of the settings the URL's options parameter (libpq's
// options, PGOPTIONS) gives with -c name=value, -cname=value or --name=value. PostgreSQL applies
// the startup packet's own parameters after options, so a default sent as a parameter would
// override the URL's setting.
func optionsSettings(options string) map[string]bool {
	if options == "" {
		return nil
	}
	// Split on unescaped whitespace, as PostgreSQL's pg_split_opts does.
	var args []string
	var cur strings.Builder
	escaped := false
	for _, r := range options {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped = true
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if cur.Len() > 0 {
				args = append(args, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		args = append(args, cur.String())
	}
	out := map[string]bool{}
	add := func(setting string) {
		if name, _, ok := strings.Cut(setting, "="); ok {
			out[strings.ToLower(strings.ReplaceAll(name, "-", "_"))] = true
		}
	}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-c" && i+1 < len(args):
			i++
			add(args[i])
		case strings.HasPrefix(a, "-c"):
			add(a[2:])
		case strings.HasPrefix(a, "--"):
			add(a[2:])
		}
	}
	return out
}
