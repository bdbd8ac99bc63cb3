package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/tenantmigrate/tenantmigrate"
)

// globalOpts are the flags every command takes.
type globalOpts struct {
	databaseURL       string
	encryptionKey     string
	previousKeys      keyList
	migrationsDir     string
	logLevel          string
	lockTimeout       time.Duration
	tenantLockTimeout time.Duration
	statementTimeout  time.Duration

	allowChangedMigrations bool
	allowEnvsub            bool
	allowMissing           bool
	keepInvalidIndexes     bool
	versionTable           string
	migrationsFormat       string
	transactionMode        string

	provisionURL               string
	provisionNameTemplate      string
	provisionTenantURLTemplate string

	// migrationsFS is the source when --migrations is not given; only demo
	// sets it (to the example set). Nil: no migrations.
	migrationsFS fs.FS

	stdout, stderr io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globalOpts{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tenantmigrate",
		Short: "Keep every tenant database on the latest schema migrations",
		Long: `tenantmigrate keeps a fleet of tenant PostgreSQL databases (or schemas) on the
latest version of one set of goose v3 (or golang-migrate) migrations. A control-plane database
lists the tenants and records each one's migrations_version and status.`,
		Example: `  # Try it in one minute: a throwaway PostgreSQL with 50 tenants
  tenantmigrate demo

  # Migrations that use goose's ENVSUB, every environment being the same
  tenantmigrate migrate --all --migrations ./migrations --allow-envsub

  # A merged branch added a migration below versions tenants already have
  tenantmigrate migrate --all --migrations ./migrations --allow-missing

  # Run the gateway and admin API
  DATABASE_URL=postgres://... ENCRYPTION_KEY=... tenantmigrate serve --migrations ./migrations

  # A goose fleet whose version table lives in schema app
  tenantmigrate migrate --all --migrations ./migrations --version-table app.goose_db_version

  # Rotate the encryption key: every server restarted with the new key and the
  # old one as previous, then every tenant URL re-encrypted under the new key
  ENCRYPTION_KEY=$NEW_KEY PREVIOUS_ENCRYPTION_KEYS=$OLD_KEY tenantmigrate rekey

  # New tenants cloned from a template database kept at the latest version
  PROVISION_URL=postgres://provisioner:secret@db1/postgres tenantmigrate tenants add acme --provision --migrations ./migrations

  # Each tenant's pending migrations in one transaction: all or nothing, one commit
  tenantmigrate migrate --all --migrations ./migrations --transaction-mode tenant

  # A golang-migrate fleet (1_init.up.sql, 1_init.down.sql, ...), recognised by itself or forced
  tenantmigrate migrate --all --migrations ./migrations --migrations-format golang-migrate`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%v", err) })

	pf := root.PersistentFlags()
	pf.StringVar(&g.databaseURL, "database-url", "", "control-plane PostgreSQL URL")
	bindEnv(pf, "database-url", "DATABASE_URL")
	pf.StringVar(&g.encryptionKey, "encryption-key", "", "secret (16+ characters) that encrypts tenant database URLs at rest")
	bindEnv(pf, "encryption-key", "ENCRYPTION_KEY")
	pf.Var(&g.previousKeys, "previous-encryption-keys", "comma-separated secrets tenant URLs may still be encrypted under (read, never written), while tenantmigrate rekey moves them to --encryption-key")
	bindEnv(pf, "previous-encryption-keys", "PREVIOUS_ENCRYPTION_KEYS")
	pf.StringVar(&g.migrationsDir, "migrations", "", "directory of goose v3 migration files; serve, migrate and verify need it, status shows the latest version with it (no default)")
	bindEnv(pf, "migrations", "MIGRATIONS_DIR")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	bindEnv(pf, "log-level", "LOG_LEVEL")
	pf.DurationVar(&g.lockTimeout, "lock-timeout", tenantmigrate.DefaultLockTimeout, "longest wait for a tenant's migration lock before a retryable failure")
	bindEnv(pf, "lock-timeout", "LOCK_TIMEOUT")
	pf.DurationVar(&g.tenantLockTimeout, "tenant-lock-timeout", tenantmigrate.DefaultTenantLockTimeout, "PostgreSQL lock_timeout in each migration session (0 = off)")
	bindEnv(pf, "tenant-lock-timeout", "TENANT_LOCK_TIMEOUT")
	pf.DurationVar(&g.statementTimeout, "statement-timeout", 0, "PostgreSQL statement_timeout in each migration session (0 = none)")
	bindEnv(pf, "statement-timeout", "STATEMENT_TIMEOUT")
	pf.BoolVar(&g.allowChangedMigrations, "allow-changed-migrations", false, "start even though migrations already applied to tenants were edited or removed since (tenantmigrate verify lists them)")
	bindEnv(pf, "allow-changed-migrations", "ALLOW_CHANGED_MIGRATIONS")
	pf.BoolVar(&g.allowEnvsub, "allow-envsub", false, "accept migrations with '-- +goose ENVSUB ON' (logged as a warning): their SQL depends on each process's environment, which checksums cannot see")
	bindEnv(pf, "allow-envsub", "ALLOW_ENVSUB")
	pf.BoolVar(&g.allowMissing, "allow-missing", false, "apply out-of-order migrations (versions below those tenants already have, never applied); without it serve and migrate refuse to start, naming them")
	bindEnv(pf, "allow-missing", "ALLOW_MISSING")
	pf.BoolVar(&g.keepInvalidIndexes, "keep-invalid-indexes", false, "do not drop the invalid indexes an interrupted CREATE INDEX CONCURRENTLY leaves; fail the tenant's run, naming them")
	bindEnv(pf, "keep-invalid-indexes", "KEEP_INVALID_INDEXES")
	pf.StringVar(&g.versionTable, "version-table", "", "schema-qualified version table of database-per-tenant tenants, e.g. app.goose_db_version (default: the one found in the tenant's database, else public.goose_db_version, or public.schema_migrations for golang-migrate sources)")
	bindEnv(pf, "version-table", "VERSION_TABLE")
	pf.StringVar(&g.migrationsFormat, "migrations-format", "", "format of --migrations: goose or golang-migrate (default: recognised from the file names, golang-migrate for NNN_title.up.sql/.down.sql files; a directory mixing both is refused)")
	bindEnv(pf, "migrations-format", "MIGRATIONS_FORMAT")
	pf.StringVar(&g.provisionURL, "provision-url", "", "postgres:// URL of a role that may CREATE DATABASE on the server where provisioned tenants go (tenants add --provision, POST /admin/tenants/ID {\"provision\": true}); none: provisioning is off")
	bindEnv(pf, "provision-url", "PROVISION_URL")
	pf.StringVar(&g.provisionNameTemplate, "provision-name-template", "", "database name of a provisioned tenant, {id} replaced by its id (default: "+tenantmigrate.DefaultProvisionNameTemplate+")")
	bindEnv(pf, "provision-name-template", "PROVISION_NAME_TEMPLATE")
	pf.StringVar(&g.provisionTenantURLTemplate, "provision-tenant-url-template", "", "URL registered for a provisioned tenant, {database} (and {id}) replaced, e.g. postgres://app:secret@db1/{database} (default: --provision-url with its database replaced)")
	bindEnv(pf, "provision-tenant-url-template", "PROVISION_TENANT_URL_TEMPLATE")
	pf.StringVar(&g.transactionMode, "transaction-mode", string(tenantmigrate.DefaultTransactionMode), "serve and migrate: file (each migration in its own transaction, as goose) or tenant (a tenant's consecutive transactional goose SQL migrations in one transaction, with their version rows; a group holds its locks until it commits)")
	bindEnv(pf, "transaction-mode", "TRANSACTION_MODE")

	root.AddCommand(newServeCmd(g), newVersionCmd(g))
	root.AddCommand(newVerifyCmd(g), newRekeyCmd(g), newRolloutCmd(g))
	root.AddCommand(newHistoryCmd(g))
	root.AddCommand(newTenantsCmd(g), newMigrateCmd(g), newStatusCmd(g), newDemoCmd(g), newCompletionCmd(g))
	root.AddCommand(newTargetCmd(g), newRollbackCmd(g), newForceCmd(g))
	return root
}

// logger returns a JSON logger on stderr at the configured level.
func (g *globalOpts) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usageErr("invalid --log-level %q: want debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: level})), nil
}

// config builds the part of the library Config every command shares.
func (g *globalOpts) config(logger *slog.Logger) (tenantmigrate.Config, error) {
	if g.databaseURL == "" {
		return tenantmigrate.Config{}, usageErr("no control-plane database: set --database-url or DATABASE_URL")
	}
	cfg := tenantmigrate.Config{
		DatabaseURL:            g.databaseURL,
		EncryptionKey:          g.encryptionKey,
		PreviousEncryptionKeys: g.previousKeys, Limits: tenantmigrate.LimitsConfig{LockTimeout: g.lockTimeout, TenantLockTimeout: g.tenantLockTimeout, StatementTimeout: g.statementTimeout}, AllowChangedMigrations: g.allowChangedMigrations,
		AllowEnvsub:        g.allowEnvsub,
		AllowMissing:       g.allowMissing,
		KeepInvalidIndexes: g.keepInvalidIndexes,
		VersionTable:       g.versionTable,
		MigrationsFormat:   g.migrationsFormat,
		Provision: tenantmigrate.ProvisionConfig{
			URL:               g.provisionURL,
			NameTemplate:      g.provisionNameTemplate,
			TenantURLTemplate: g.provisionTenantURLTemplate,
		},
		TransactionMode: tenantmigrate.TransactionMode(g.transactionMode),
		Logger:          logger,
	}
	if cfg.Limits.TenantLockTimeout == 0 {
		cfg.Limits.TenantLockTimeout = -1 // the flag's 0 means off; the Config's zero means default
	}
	if g.encryptionKey != "" && utf8.RuneCountInString(g.encryptionKey) < 16 {
		return cfg, usageErr("--encryption-key (ENCRYPTION_KEY) must be at least 16 characters")
	}
	if len(g.previousKeys) > 0 && g.encryptionKey == "" {
		return cfg, usageErr("--previous-encryption-keys (PREVIOUS_ENCRYPTION_KEYS) needs --encryption-key (ENCRYPTION_KEY): the current key, which every write uses")
	}
	for i, k := range g.previousKeys {
		if utf8.RuneCountInString(k) < 16 {
			return cfg, usageErr("--previous-encryption-keys (PREVIOUS_ENCRYPTION_KEYS): key %d of %d has fewer than 16 characters", i+1, len(g.previousKeys))
		}
	}
	switch g.migrationsFormat {
	case "", "goose", "golang-migrate":
	default:
		return cfg, usageErr("--migrations-format (MIGRATIONS_FORMAT) is %q: want goose or golang-migrate", g.migrationsFormat)
	}
	switch tenantmigrate.TransactionMode(g.transactionMode) {
	case tenantmigrate.TransactionModeFile, tenantmigrate.TransactionModeTenant:
	default:
		return cfg, usageErr("--transaction-mode (TRANSACTION_MODE) is %q: want file or tenant", g.transactionMode)
	}
	if g.versionTable != "" {
		if err := tenantmigrate.ValidateVersionTable(g.versionTable); err != nil {
			return cfg, usageErr("--version-table (VERSION_TABLE): %v", err)
		}
	}
	if g.migrationsDir != "" {
		st, err := os.Stat(g.migrationsDir)
		if err != nil {
			return cfg, usageErr("--migrations: %v", err)
		}
		if !st.IsDir() {
			return cfg, usageErr("--migrations: %s is not a directory", g.migrationsDir)
		}
		cfg.Migrations = os.DirFS(g.migrationsDir)
	} else if g.migrationsFS != nil {
		cfg.Migrations = g.migrationsFS
	}
	return cfg, nil
}

// errNoMigrations is the message of a command that needs migrations without
// them.
const errNoMigrations = "no migrations: set --migrations or MIGRATIONS_DIR to the directory of the fleet's goose migration files (there is no default set; only tenantmigrate demo uses its built-in examples)"

// hasMigrations reports whether the command has a migration source.
func (g *globalOpts) hasMigrations() bool { return g.migrationsDir != "" || g.migrationsFS != nil }

// requireMigrations is the usage error (exit 2) of serve, migrate and
// verify run without migrations, checked before anything connects.
func (g *globalOpts) requireMigrations() error {
	if !g.hasMigrations() {
		return usageErr(errNoMigrations)
	}
	return nil
}

// newErr turns an error of tenantmigrate.New into an exit error: a
// migration source without migrations is a usage error naming the flag
// (exit 2), anything else a failure (exit 1).
func (g *globalOpts) newErr(err error) error {
	if errors.Is(err, tenantmigrate.ErrNoMigrations) {
		return usageErr("no migrations in --migrations %s (MIGRATIONS_DIR): no versioned goose .sql file (such as 00001_create_users.sql) at its root", g.migrationsDir)
	}
	var envsub *tenantmigrate.EnvsubMigrationsError
	if errors.As(err, &envsub) {
		return usageErr("%v: %s: %s; write the values into the files, or pass --allow-envsub (ALLOW_ENVSUB) to accept the risk",
			tenantmigrate.ErrEnvsubMigrations, strings.Join(envsub.Names, ", "), tenantmigrate.EnvsubRisk)
	}
	if errors.Is(err, tenantmigrate.ErrMixedFormats) {
		return usageErr("--migrations %s (MIGRATIONS_DIR): %v", g.migrationsDir, err)
	}
	if errors.Is(err, tenantmigrate.ErrMigrationsChanged) {
		return failedErr(fmt.Errorf("%w (--allow-changed-migrations, ALLOW_CHANGED_MIGRATIONS)", err))
	}
	if errors.Is(err, tenantmigrate.ErrInvalidConfig) {
		return usageErr("%v", err)
	}
	var outOfOrder *tenantmigrate.OutOfOrderMigrationsError
	if errors.As(err, &outOfOrder) {
		return failedErr(fmt.Errorf("%w (--allow-missing, ALLOW_MISSING)", err))
	}
	return failedErr(err)
}

func newVersionCmd(g *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version of tenantmigrate",
		Example: "  tenantmigrate version",
		Args:    cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(g.stdout, "tenantmigrate %s\n", strings.TrimSpace(version))
			return err
		},
	}
}
