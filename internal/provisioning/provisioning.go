// Package provisioning creates new tenant databases from a template
// database kept at the latest migration version, instead of migrating an
// empty database through the whole history.
//
// A [Provisioner] works on one PostgreSQL server, the provision server,
// through a role that may CREATE DATABASE (Config.URL). For a new tenant it:
//
//  1. makes sure the template of this migration source exists (template.go):
//     a database named after the source's latest version and a hash of its
//     checksums, built on first use by migrating an empty database with the
//     migrator, as any tenant is, under a session advisory lock on the
//     provision server and under a temporary name, then published by a
//     rename once it is complete, with ALLOW_CONNECTIONS false and
//     IS_TEMPLATE true: it is never cloned while it is being migrated, and
//     no session of its own can stop a clone ("source database is being
//     accessed by other users");
//  2. clones it: CREATE DATABASE ... TEMPLATE ... STRATEGY (clone.go), and
//     marks the clone with a comment holding a random token that the caller
//     records, so that Drop later drops only a database it created.
//
// The version table is part of the clone, exactly as the migrations wrote
// it in the template, so goose (or golang-migrate) and verify see a tenant
// like any migrated one. Registering the tenant in the control plane is the
// caller's (the root package's ProvisionTenant).
package provisioning

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// DefaultNameTemplate is the default of Config.NameTemplate.
const DefaultNameTemplate = "tenant_{id}"

// Placeholders of the name and URL templates.
const (
	// IDPlaceholder is replaced by the tenant id in Config.NameTemplate and
	// Config.TenantURLTemplate.
	IDPlaceholder = "{id}"
	// DatabasePlaceholder is replaced by the database name in
	// Config.TenantURLTemplate.
	DatabasePlaceholder = "{database}"
)

// Strategies of CREATE DATABASE (PostgreSQL 15+).
const (
	// StrategyWALLog copies the template block by block through the WAL
	// (PostgreSQL's default since 15). Faster for small templates: no
	// checkpoint. The default of Config.Strategy (see BENCHMARKS.md).
	StrategyWALLog = "WAL_LOG"
	// StrategyFileCopy copies the files and takes two checkpoints.
	StrategyFileCopy = "FILE_COPY"
)

// maxIdentifierLen is PostgreSQL's NAMEDATALEN less one.
const maxIdentifierLen = 63

// Errors callers branch on.
var (
	// ErrInvalid is wrapped by the errors of bad input: a name template that
	// gives an invalid or too long database name for a tenant id.
	ErrInvalid = errors.New("invalid provisioning input")
	// ErrDatabaseExists is wrapped by Create's error when the tenant's
	// database name is taken on the provision server: nothing was created
	// and the existing database was not touched.
	ErrDatabaseExists = errors.New("database already exists on the provision server")
	// ErrNotProvisioned is wrapped by Drop's error when the database is not
	// the one Create made for the token (another database of that name):
	// nothing was dropped.
	ErrNotProvisioned = errors.New("database was not provisioned by tenantmigrate")
	// ErrNotConfigured is returned by the root package's ProvisionTenant and
	// DeprovisionTenant when no provision server is configured.
	ErrNotConfigured = errors.New("provisioning is not configured: no provision server URL")
)

// Migrator migrates the template; *migrator.Migrator implements it.
type Migrator interface {
	Migrate(ctx context.Context, t migrator.Target) (migrator.Result, error)
	Latest() int64
	Migrations() []migrator.SourceMigration
}

// Config configures a Provisioner.
type Config struct {
	// URL is the provision server's URL, of a role that may CREATE
	// DATABASE, to a database that always exists (e.g. postgres). Its
	// database holds the advisory lock of template builds, so every
	// instance must use the same one. Required.
	URL string

	// NameTemplate names a tenant's database: IDPlaceholder is replaced by
	// the tenant id. Only a-z, 0-9 and _ besides the placeholder; the name
	// must fit 63 bytes. Defaults to DefaultNameTemplate.
	NameTemplate string

	// TenantURLTemplate is the URL stored for a provisioned tenant, with
	// DatabasePlaceholder (required) and IDPlaceholder replaced. Defaults
	// to URL with its database replaced by the tenant's: the tenant
	// connects as the provision role.
	TenantURLTemplate string

	// Migrator builds the template. Required to create databases; without
	// it a Provisioner only drops them.
	Migrator Migrator

	// Strategy is CREATE DATABASE's STRATEGY for clones: StrategyWALLog or
	// StrategyFileCopy. Defaults to StrategyWALLog.
	Strategy string

	// RecordChecksums is told the versions the template build applied
	// (drift detection). Defaults to nothing.
	RecordChecksums func(ctx context.Context, applied []int64)

	// Logger receives an info record per template built. Defaults to
	// discarding.
	Logger *slog.Logger
}

// Provisioner creates and drops tenant databases on the provision server.
// It is safe for concurrent use. Close it when done.
type Provisioner struct {
	cfg      Config
	pool     *pgxpool.Pool // the provision server's maintenance database
	template string        // the name of this source's template
}

// ValidateConfig checks what New checks without connecting.
func ValidateConfig(cfg Config) error {
	if cfg.URL == "" {
		return fmt.Errorf("%w: no provision URL", ErrInvalid)
	}
	if _, err := pgxpool.ParseConfig(cfg.URL); err != nil {
		return fmt.Errorf("%w: provision URL: %v", ErrInvalid, redact.Error(err, cfg.URL))
	}
	nt := cfg.NameTemplate
	if nt == "" {
		nt = DefaultNameTemplate
	}
	if !strings.Contains(nt, IDPlaceholder) {
		return fmt.Errorf("%w: name template %q lacks %s", ErrInvalid, shorten(nt), IDPlaceholder)
	}
	for _, r := range strings.ReplaceAll(nt, IDPlaceholder, "") {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("%w: name template %q: only a-z, 0-9, _ and %s", ErrInvalid, shorten(nt), IDPlaceholder)
		}
	}
	if len(strings.ReplaceAll(nt, IDPlaceholder, "x")) > maxIdentifierLen {
		return fmt.Errorf("%w: name template %q gives names over %d bytes", ErrInvalid, shorten(nt), maxIdentifierLen)
	}
	if ut := cfg.TenantURLTemplate; ut != "" && !strings.Contains(ut, DatabasePlaceholder) {
		return fmt.Errorf("%w: tenant URL template lacks %s", ErrInvalid, DatabasePlaceholder)
	}
	switch cfg.Strategy {
	case "", StrategyWALLog, StrategyFileCopy:
	default:
		return fmt.Errorf("%w: strategy %q: want %s or %s", ErrInvalid, shorten(cfg.Strategy), StrategyWALLog, StrategyFileCopy)
	}
	return nil
}

// New returns a Provisioner for cfg. It does not connect.
func New(cfg Config) (*Provisioner, error) {
	if err := ValidateConfig(cfg); err != nil {
		return nil, err
	}
	if cfg.NameTemplate == "" {
		cfg.NameTemplate = DefaultNameTemplate
	}
	if cfg.Strategy == "" {
		cfg.Strategy = StrategyWALLog
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RecordChecksums == nil {
		cfg.RecordChecksums = func(context.Context, []int64) {}
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("provision URL: %w", redact.Error(err, cfg.URL))
	}
	if pcfg.ConnConfig.RuntimeParams == nil {
		pcfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	if _, ok := pcfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		pcfg.ConnConfig.RuntimeParams["application_name"] = "tenantmigrate-provision"
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("provision server: %w", redact.Error(err, cfg.URL))
	}
	p := &Provisioner{cfg: cfg, pool: pool}
	if cfg.Migrator != nil {
		p.template = TemplateName(cfg.Migrator)
	}
	return p, nil
}

// Close closes the connections to the provision server.
func (p *Provisioner) Close() { p.pool.Close() }

// Template returns the name of the template database of this source.
func (p *Provisioner) Template() string { return p.template }

// TemplateName is the template database of a source:
// "tenantmigrate_tpl_v<latest>_<hash>", the hash (12 hex digits of SHA-256)
// covering every version, name and checksum, so that a source with another
// latest version, or the same version with other contents, gets its own
// template, and the template of one release is never taken for another's.
func TemplateName(m Migrator) string {
	h := sha256.New()
	for _, sm := range m.Migrations() {
		fmt.Fprintf(h, "%d\x00%s\x00%s\n", sm.Version, sm.Name, sm.Checksum)
	}
	return fmt.Sprintf("%sv%d_%s", TemplatePrefix, m.Latest(), hex.EncodeToString(h.Sum(nil))[:12])
}

// TemplatePrefix starts the name of every template database (and of the
// temporary databases templates are built in).
const TemplatePrefix = "tenantmigrate_tpl_"

// DatabaseName returns the database name of tenant id: NameTemplate with
// the id. It returns an error wrapping ErrInvalid when the name does not
// fit 63 bytes.
func (p *Provisioner) DatabaseName(id string) (string, error) {
	name := strings.ReplaceAll(p.cfg.NameTemplate, IDPlaceholder, id)
	if len(name) > maxIdentifierLen {
		return "", fmt.Errorf("%w: database name %s for tenant %s is longer than %d bytes: use a shorter tenant id or name template",
			ErrInvalid, name, id, maxIdentifierLen)
	}
	if strings.HasPrefix(name, TemplatePrefix) {
		return "", fmt.Errorf("%w: database name %s is reserved for templates", ErrInvalid, name)
	}
	return name, nil
}

// TenantURL returns the URL stored for tenant id whose database is name.
func (p *Provisioner) TenantURL(id, name string) (string, error) { return TenantURL(p.cfg, id, name) }

// TenantURL returns the URL cfg stores for tenant id whose database is name:
// cfg.TenantURLTemplate filled in, or cfg.URL with its database replaced.
func TenantURL(cfg Config, id, name string) (string, error) {
	if ut := cfg.TenantURLTemplate; ut != "" {
		return strings.ReplaceAll(strings.ReplaceAll(ut, DatabasePlaceholder, name), IDPlaceholder, id), nil
	}
	return withDatabase(cfg.URL, name)
}

// withDatabase returns connString pointed at database, for a URL or a
// keyword/value connection string. database must need no quoting (a-z, 0-9,
// _ and -).
func withDatabase(connString, database string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			// Not err: it holds the URL, and so maybe a password.
			return "", errors.New("provision URL is not a valid URL")
		}
		u.Path, u.RawPath = "/"+database, ""
		// A dbname (or database) query parameter overrides the path.
		if q := u.Query(); q.Has("dbname") || q.Has("database") {
			q.Del("dbname")
			q.Del("database")
			u.RawQuery = q.Encode()
		}
		return u.String(), nil
	}
	// Keyword/value: a later keyword overrides an earlier one.
	return connString + " dbname=" + database, nil
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
