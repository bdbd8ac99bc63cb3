package tenantmigrate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// This file guards against drift between the migration source, the control
// plane and the tenant databases:
//
//   - the control plane records the checksum of every migration version the
//     first time a run applies it (table tenantmigrate.migration_checksums),
//     and New refuses to start when an applied file was edited or removed;
//   - VerifyTenant compares a tenant database's goose_db_version with the
//     control plane and the source (tenantmigrate verify).
//
// Checksums are the SHA-256 of a SQL file's bytes. Go migrations are compiled
// into the binary and have no file to hash: they are recorded with their name
// ("go migration N") and the checksum "go", so only their presence (and that
// the version is still a Go migration) is checked.

// ErrMigrationsChanged is wrapped by the *MigrationsChangedError that New
// returns when migrations the control plane recorded as applied were edited
// or removed since, unless Config.AllowChangedMigrations is set.
var ErrMigrationsChanged = errors.New("migrations changed since they were applied")

// MigrationChange says how an applied migration differs from the source.
type MigrationChange string

// Changes New detects.
const (
	// MigrationChecksumDiffers: the source file of the version is not the
	// one that was applied (edited, or replaced by another file, or turned
	// from SQL into Go or back).
	MigrationChecksumDiffers MigrationChange = "checksum differs"
	// MigrationMissing: the source has no migration with the version, though
	// it has later ones.
	MigrationMissing MigrationChange = "missing"
)

// ChangedMigration is an applied migration whose source changed.
type ChangedMigration struct {
	// Version is the migration version.
	Version int64
	// Name is the migration's file name in the source, or the name it was
	// recorded with when it is missing.
	Name string
	// Change says what changed.
	Change MigrationChange
	// RecordedChecksum is the checksum recorded when the version was first
	// applied.
	RecordedChecksum string
	// SourceChecksum is the checksum of the source's migration; empty when it
	// is missing.
	SourceChecksum string
}

func (c ChangedMigration) String() string { return fmt.Sprintf("%s (%s)", c.Name, c.Change) }

// MigrationsChangedError lists the applied migrations whose source changed.
// It wraps ErrMigrationsChanged.
type MigrationsChangedError struct {
	// Changes are the changed migrations, in version order.
	Changes []ChangedMigration
}

// maxListedChanges is how many changes the error message names.
const maxListedChanges = 20

func (e *MigrationsChangedError) Error() string {
	var b strings.Builder
	b.WriteString(ErrMigrationsChanged.Error())
	b.WriteString(": ")
	for i, c := range e.Changes {
		if i == maxListedChanges {
			fmt.Fprintf(&b, " and %d more", len(e.Changes)-maxListedChanges)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.String())
	}
	b.WriteString("; restore the applied files (a change belongs in a new migration), " +
		"or set Config.AllowChangedMigrations to run anyway")
	return b.String()
}

// Unwrap returns ErrMigrationsChanged.
func (e *MigrationsChangedError) Unwrap() error { return ErrMigrationsChanged }

// compareChecksums returns the recorded versions whose source changed or
// went missing, and the recorded versions above the source's latest (a newer
// build applied them: reported apart, not as missing, so an older build can
// still start, e.g. to roll back).
func compareChecksums(recorded []controlplane.MigrationChecksum, source []migrator.SourceMigration) (changed []ChangedMigration, newer []int64) {
	latest := source[len(source)-1].Version
	byVersion := make(map[int64]migrator.SourceMigration, len(source))
	for _, s := range source {
		byVersion[s.Version] = s
	}
	for _, r := range recorded {
		s, ok := byVersion[r.Version]
		switch {
		case !ok && r.Version > latest:
			newer = append(newer, r.Version)
		case !ok:
			changed = append(changed, ChangedMigration{Version: r.Version, Name: r.Name, Change: MigrationMissing, RecordedChecksum: r.Checksum})
		case s.Checksum != r.Checksum:
			changed = append(changed, ChangedMigration{Version: r.Version, Name: s.Name, Change: MigrationChecksumDiffers, RecordedChecksum: r.Checksum, SourceChecksum: s.Checksum})
		}
	}
	slices.SortFunc(changed, func(a, b ChangedMigration) int { return cmp.Compare(a.Version, b.Version) })
	return changed, newer
}

// driftState is the Orchestrator's part of drift detection.
type driftState struct {
	// changed are the changes New found (and AllowChangedMigrations let
	// pass).
	changed []ChangedMigration
	// source is the source's migrations by version.
	source map[int64]migrator.SourceMigration

	mu sync.Mutex
	// recorded holds the versions known to have a checksum in the control
	// plane, or being recorded: a version is written at most once per
	// process (again only after a failed write).
	recorded map[int64]bool
}

// checkMigrations compares the checksums the control plane recorded with the
// source, refuses to go on when applied migrations changed (unless
// AllowChangedMigrations), and records the checksums of versions that
// tenants are known to have applied but that were never recorded (control
// planes older than the checksums table): the source is taken as what was
// applied, the first time.
func (o *Orchestrator) checkMigrations(ctx context.Context) error {
	if o.migrator == nil {
		return nil // ReadOnly without migrations: nothing to compare
	}
	source := o.migrator.Migrations()
	d := &driftState{
		source:   make(map[int64]migrator.SourceMigration, len(source)),
		recorded: make(map[int64]bool, len(source)),
	}
	for _, s := range source {
		d.source[s.Version] = s
	}
	recorded, err := o.store.MigrationChecksums(ctx)
	if err != nil {
		return err
	}
	for _, r := range recorded {
		d.recorded[r.Version] = true
	}
	changed, newer := compareChecksums(recorded, source)
	if len(newer) > 0 {
		o.logger.Warn("the control plane recorded migrations this build's source does not have: a newer build applied them to some tenants",
			"versions", newer, "latest", o.latest)
	}
	if len(changed) > 0 {
		if !o.cfg.AllowChangedMigrations {
			return &MigrationsChangedError{Changes: changed}
		}
		names := make([]string, len(changed))
		for i, c := range changed {
			names[i] = c.String()
		}
		o.logger.Warn("migrations changed since they were applied; starting anyway (AllowChangedMigrations)", "migrations", names)
		d.changed = changed
	}
	o.drift = d
	if o.cfg.ReadOnly {
		return nil // a read-only Orchestrator records nothing: see readonly.go
	}

	maxVersion, err := o.store.MaxMigrationsVersion(ctx)
	if err != nil {
		return err
	}
	if len(recorded) == 0 {
		// Backfill, once, for control planes older than the checksums:
		// versions up to the highest any tenant reached are taken as applied.
		var applied []int64
		for _, s := range source {
			if s.Version <= maxVersion {
				applied = append(applied, s.Version)
			}
		}
		return o.recordChecksumsErr(ctx, applied)
	}
	return o.checkOutOfOrder(ctx, source, recorded, maxVersion)
}

// ErrOutOfOrderMigrations is wrapped by the *OutOfOrderMigrationsError that
// New returns when the source has versions below versions already applied to
// tenants that were never applied anywhere (a release added version 5 to a
// fleet at 6, as merged branches do), unless Config.AllowMissing is set.
var ErrOutOfOrderMigrations = errors.New("out-of-order migrations")

// OutOfOrderMigrationsError lists the source's out-of-order migrations. It
// wraps ErrOutOfOrderMigrations.
type OutOfOrderMigrationsError struct {
	// Migrations are the out-of-order migrations, in version order.
	Migrations []migrator.SourceMigration
	// Above is the highest version recorded as applied to some tenant.
	Above int64
}

func (e *OutOfOrderMigrationsError) Error() string {
	names := make([]string, len(e.Migrations))
	for i, m := range e.Migrations {
		names[i] = m.Name
	}
	return fmt.Sprintf("%s: %s never applied to any tenant, but tenants are at versions up to %d: "+
		"goose refuses such tenants, and they would otherwise be counted up to date without it; "+
		"renumber the migrations above %d, or set AllowMissing to apply them out of order",
		ErrOutOfOrderMigrations, strings.Join(names, ", "), e.Above, e.Above)
}

// Unwrap returns ErrOutOfOrderMigrations.
func (e *OutOfOrderMigrationsError) Unwrap() error { return ErrOutOfOrderMigrations }

// checkOutOfOrder finds source versions below the highest version applied to
// a tenant (recorded with a checksum, or a tenant's version) that were never
// recorded as applied. Without AllowMissing it refuses them; with it, it
// marks the tenants above the lowest of them FAILED (they lack it), so that
// the scans and the gate run them again and goose applies it.
func (o *Orchestrator) checkOutOfOrder(ctx context.Context, source []migrator.SourceMigration, recorded []controlplane.MigrationChecksum, maxVersion int64) error {
	above := maxVersion
	done := make(map[int64]bool, len(recorded))
	for _, r := range recorded {
		done[r.Version] = true
		above = max(above, r.Version)
	}
	var missing []migrator.SourceMigration
	for _, s := range source {
		if s.Version < above && !done[s.Version] {
			missing = append(missing, s)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	missing, err := o.dropLostChecksums(ctx, missing)
	if err != nil || len(missing) == 0 {
		return err
	}
	if !o.cfg.AllowMissing {
		return &OutOfOrderMigrationsError{Migrations: missing, Above: above}
	}
	versions := make([]int64, len(missing))
	for i, m := range missing {
		versions[i] = m.Version
	}
	n, err := o.store.MarkLackingVersion(ctx, missing[0].Version,
		"lacks out-of-order migrations "+formatVersions(versions)+" (AllowMissing): to be applied")
	if err != nil {
		return err
	}
	o.logger.Warn("out-of-order migrations will be applied (AllowMissing); tenants above them marked FAILED until they have them",
		"versions", versions, "tenants", n)
	return nil
}

// lostChecksumSample is how many of the tenants recorded above a candidate
// out-of-order version dropLostChecksums reads.
const lostChecksumSample = 3

// dropLostChecksums returns the candidate out-of-order versions that are
// really missing. A version counts as never applied when its checksum was
// never recorded, but that write can fail while the tenant's migration
// committed (the control plane down for a moment, the process killed between
// the two), and no later run records it: a rerun finds nothing pending. So
// before refusing, it reads the version tables of a few tenants recorded above
// the lowest candidate (the highest first): a candidate one of them has was
// applied, and its checksum is recorded now. A tenant that cannot be read is
// skipped; a real out-of-order version is in none of them.
func (o *Orchestrator) dropLostChecksums(ctx context.Context, missing []migrator.SourceMigration) ([]migrator.SourceMigration, error) {
	ids, err := o.store.TenantsAboveVersion(ctx, missing[0].Version, lostChecksumSample)
	if err != nil {
		return nil, err
	}
	found := map[int64]bool{}
	for _, id := range ids {
		applied, err := o.AppliedVersions(ctx, id)
		if err != nil {
			o.logger.Warn("read a tenant's applied versions to check out-of-order migrations", "tenant_id", id, "err", err)
			continue
		}
		for _, v := range applied {
			found[v] = true
		}
	}
	var lost []int64
	var still []migrator.SourceMigration
	for _, m := range missing {
		if found[m.Version] {
			lost = append(lost, m.Version)
		} else {
			still = append(still, m)
		}
	}
	if len(lost) > 0 {
		o.logger.Warn("migrations applied to tenants had no checksum recorded (a failed write); recording them now",
			"versions", lost)
		if err := o.recordChecksumsErr(ctx, lost); err != nil {
			return nil, err
		}
	}
	return still, nil
}

// recordChecksums records the checksums of versions a run applied, once per
// version per process. A failure is logged: the migration itself succeeded,
// and a later run records the versions.
func (o *Orchestrator) recordChecksums(ctx context.Context, applied []int64) {
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	if err := o.recordChecksumsErr(ctx, applied); err != nil {
		o.logger.Warn("record migration checksums", "versions", applied, "err", err)
	}
}

func (o *Orchestrator) recordChecksumsErr(ctx context.Context, applied []int64) error {
	d := o.drift
	if d == nil || len(applied) == 0 || o.cfg.ReadOnly {
		return nil
	}
	var todo []controlplane.MigrationChecksum
	d.mu.Lock()
	for _, v := range applied {
		s, ok := d.source[v]
		if !ok || d.recorded[v] {
			continue
		}
		d.recorded[v] = true
		todo = append(todo, controlplane.MigrationChecksum{Version: v, Name: s.Name, Checksum: s.Checksum})
	}
	d.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	if _, err := o.store.RecordMigrationChecksums(ctx, todo); err != nil {
		d.mu.Lock()
		for _, c := range todo {
			delete(d.recorded, c.Version)
		}
		d.mu.Unlock()
		return err
	}
	return nil
}

// ChangedMigrations returns the applied migrations whose source changed, as
// New found them. It is empty unless Config.AllowChangedMigrations let New
// start despite them.
func (o *Orchestrator) ChangedMigrations() []ChangedMigration {
	if o.drift == nil {
		return nil
	}
	return slices.Clone(o.drift.changed)
}

// AppliedVersions returns the versions recorded in the tenant database's
// version table (see Config.VersionTable), ascending and without goose's version 0, reading them in
// a read-only session without taking the tenant's lock.
func (o *Orchestrator) AppliedVersions(ctx context.Context, id string) ([]int64, error) {
	if o.migrator == nil {
		return nil, errNoMigrationsConfigured
	}
	t, err := o.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return o.migrator.Applied(ctx, migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema})
}

// TenantVerification is what VerifyTenant found about one tenant.
type TenantVerification struct {
	// TenantID is the tenant's id.
	TenantID string
	// ControlPlaneVersion is the tenant's migrations_version in the control
	// plane; nil when it was never migrated.
	ControlPlaneVersion *int64
	// DatabaseVersion is the highest version in the tenant database's
	// goose_db_version (0: none); -1 when Err is set.
	DatabaseVersion int64
	// Ahead are versions applied to the tenant database that the source
	// lacks.
	Ahead []int64
	// Gaps are versions of the source below DatabaseVersion that the tenant
	// database lacks (goose refuses to migrate such a database).
	Gaps []int64
	// Duplicates are versions recorded more than once in the tenant's
	// version table: the trace of a migration applied twice.
	Duplicates []int64
	// VersionTables lists the tenant database's version tables when it has
	// more than one (a run recorded its versions in a second table, and
	// migrations may have run twice); the tenant is then not migrated and
	// nothing else is compared. Empty otherwise. When ConfiguredVersionTable
	// is set, it lists the one table found instead.
	VersionTables []string
	// ConfiguredVersionTable is Config.VersionTable when the tenant database
	// lacks that table but has one in VersionTables elsewhere: the tenant is
	// not migrated either (a run would create a second table). Empty
	// otherwise.
	ConfiguredVersionTable string
	// SchemaTenantVersionTables lists, for a database-per-tenant tenant, the
	// version tables of schema-per-tenant tenants that its database holds
	// (tenantmigrate marks each schema tenant's table as its own): the
	// tenant is not migrated (it would take such a table for its own, or be
	// given one beside it) and nothing else is compared; VersionTables then
	// lists the database's other version tables, if any. Empty otherwise.
	SchemaTenantVersionTables []string
	// Dirty reports a golang-migrate tenant whose schema_migrations row is
	// dirty at DirtyVersion: that migration failed or was interrupted, and
	// the tenant is not migrated until the flag is cleared.
	Dirty bool
	// DirtyVersion is the version a Dirty tenant is dirty at.
	DirtyVersion int64
	// Err is why the tenant database could not be read.
	Err error
}

// Unreachable reports whether the tenant database could not be read.
func (v TenantVerification) Unreachable() bool { return v.Err != nil }

// IsAhead reports whether the tenant database has versions the source lacks.
func (v TenantVerification) IsAhead() bool { return len(v.Ahead) > 0 }

// VersionMismatch reports whether the control plane's version differs from
// the tenant database's (a tenant never migrated counts as 0).
func (v TenantVerification) VersionMismatch() bool {
	if v.Err != nil || len(v.VersionTables) > 0 || len(v.SchemaTenantVersionTables) > 0 {
		return false
	}
	var cp int64
	if v.ControlPlaneVersion != nil {
		cp = *v.ControlPlaneVersion
	}
	return cp != v.DatabaseVersion
}

// Inconsistent reports a version mismatch, gaps, versions recorded twice,
// more than one version table, a database tenant on a database holding
// schema tenants' version tables or a dirty golang-migrate tenant.
func (v TenantVerification) Inconsistent() bool {
	return v.VersionMismatch() || len(v.Gaps) > 0 || len(v.Duplicates) > 0 || len(v.VersionTables) > 0 ||
		len(v.SchemaTenantVersionTables) > 0 || v.Dirty
}

// maxNamedVersionTables is how many of SchemaTenantVersionTables Problems
// names.
const maxNamedVersionTables = 3

// OK reports whether nothing is wrong with the tenant.
func (v TenantVerification) OK() bool { return !v.Unreachable() && !v.IsAhead() && !v.Inconsistent() }

// Problems describes what is wrong with the tenant, one line per problem;
// none when OK.
func (v TenantVerification) Problems() []string {
	if v.Err != nil {
		return []string{"unreachable: " + v.Err.Error()}
	}
	if n := len(v.SchemaTenantVersionTables); n > 0 {
		named := v.SchemaTenantVersionTables[:min(n, maxNamedVersionTables)]
		tables := strings.Join(named, ", ")
		if n > len(named) {
			tables += fmt.Sprintf(" and %d more", n-len(named))
		}
		what := "its database's only version table is a schema tenant's, " + tables
		if n > 1 || len(v.VersionTables) > 0 {
			what = "its database holds the version tables of schema tenants, " + tables
		}
		return []string{"inconsistent: " + what + "; a database tenant would take such a table for its own " +
			"(tenantmigrate applies nothing to it: register it with its own database or schema)"}
	}
	if v.ConfiguredVersionTable != "" {
		return []string{"inconsistent: the configured version table " + v.ConfiguredVersionTable + " does not exist, but " +
			strings.Join(v.VersionTables, " and ") + " does (tenantmigrate applies nothing to it until the configured table is the one that exists)"}
	}
	if len(v.VersionTables) > 0 {
		return []string{"inconsistent: more than one version table, " + strings.Join(v.VersionTables, " and ") +
			" (migrations may have run twice; tenantmigrate applies nothing to it until one is dropped)"}
	}
	var out []string
	if v.IsAhead() {
		out = append(out, "ahead of the source: applied versions "+formatVersions(v.Ahead)+" that the source lacks")
	}
	if v.VersionMismatch() {
		cp := "never migrated"
		if v.ControlPlaneVersion != nil {
			cp = "at version " + strconv.FormatInt(*v.ControlPlaneVersion, 10)
		}
		out = append(out, fmt.Sprintf("inconsistent: the control plane has it %s, its database is at version %d", cp, v.DatabaseVersion))
	}
	if len(v.Gaps) > 0 {
		out = append(out, fmt.Sprintf("inconsistent: its database lacks versions %s below its version %d", formatVersions(v.Gaps), v.DatabaseVersion))
	}
	if v.Dirty {
		out = append(out, "inconsistent: "+(&migrator.DirtyError{Version: v.DirtyVersion}).Error())
	}
	if len(v.Duplicates) > 0 {
		out = append(out, fmt.Sprintf("inconsistent: versions %s are recorded more than once in its version table (applied twice)", formatVersions(v.Duplicates)))
	}
	return out
}

// VerifyTenant reads the tenant database's applied versions (read-only, see
// AppliedVersions) and compares them with t's control-plane version and with
// the source. t is a tenant as ListTenants or GetTenant return it, with its
// URL. When the versions differ, the control plane is read again, so that a
// run that finished meanwhile is not reported; a run still in progress can
// be.
func (o *Orchestrator) VerifyTenant(ctx context.Context, t Tenant) TenantVerification {
	v := TenantVerification{TenantID: t.ID, ControlPlaneVersion: t.MigrationsVersion, DatabaseVersion: -1}
	if o.migrator == nil {
		v.Err = errNoMigrationsConfigured
		return v
	}
	if t.DecryptError != "" {
		v.Err = fmt.Errorf("tenant %s: %w%s", t.ID, ErrDecrypt, strings.TrimPrefix(t.DecryptError, ErrDecrypt.Error()))
		return v
	}
	in, err := o.migrator.Inspect(ctx, migrator.Target{DatabaseURL: t.DatabaseURL, Schema: t.Schema})
	if err != nil {
		v.Err = err
		return v
	}
	v.DatabaseVersion = 0
	if in.Conflict != nil {
		for _, vt := range in.Conflict.Found {
			v.VersionTables = append(v.VersionTables, vt.String())
		}
		for _, vt := range in.Conflict.SchemaTenants {
			v.SchemaTenantVersionTables = append(v.SchemaTenantVersionTables, vt.String())
		}
		if c := in.Conflict.Configured; c != nil && !slices.Contains(in.Conflict.Found, *c) {
			v.ConfiguredVersionTable = c.String()
		}
		return v
	}
	applied := in.Applied
	v.Duplicates = in.Duplicates
	v.Dirty, v.DirtyVersion = in.Dirty, in.DirtyVersion
	if n := len(applied); n > 0 {
		v.DatabaseVersion = applied[n-1]
	}
	for _, a := range applied {
		if _, ok := o.drift.source[a]; !ok {
			v.Ahead = append(v.Ahead, a)
		}
	}
	for _, s := range o.migrator.Versions() {
		if s < v.DatabaseVersion {
			if _, found := slices.BinarySearch(applied, s); !found {
				v.Gaps = append(v.Gaps, s)
			}
		}
	}
	if v.VersionMismatch() {
		if st, err := o.store.GetState(ctx, t.ID); err == nil {
			v.ControlPlaneVersion = st.MigrationsVersion
		}
	}
	return v
}

// formatVersions joins versions with commas.
func formatVersions(vs []int64) string {
	strs := make([]string, len(vs))
	for i, v := range vs {
		strs[i] = strconv.FormatInt(v, 10)
	}
	return strings.Join(strs, ",")
}
