package tenantmigrate

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// This file refuses migrations that use goose's environment substitution
// ("-- +goose ENVSUB ON"). goose replaces ${VAR} in such a file from the
// environment of each process that applies it, while the drift checksums
// cover the file as written: three processes with three environments gave
// three tenants three different tables, and verify called them consistent.
// Refusing them by default is the simple safe way; Config.AllowEnvsub lets
// whoever controls every environment accept the risk.

// ErrEnvsubMigrations is wrapped by the *EnvsubMigrationsError that New
// returns when SQL migrations turn on goose's environment substitution,
// unless Config.AllowEnvsub is set.
var ErrEnvsubMigrations = errors.New("migrations use goose environment substitution (-- +goose ENVSUB ON)")

// EnvsubMigrationsError names the SQL migrations with "-- +goose ENVSUB ON".
// It wraps ErrEnvsubMigrations.
type EnvsubMigrationsError struct {
	// Names are the migration file names, in version order.
	Names []string
}

func (e *EnvsubMigrationsError) Error() string {
	return ErrEnvsubMigrations.Error() + ": " + strings.Join(e.Names, ", ") + ": " + EnvsubRisk +
		"; write the values into the files (a value per tenant belongs in the tenant's data, not its schema), " +
		"or set Config.AllowEnvsub to accept the risk"
}

// Unwrap returns ErrEnvsubMigrations.
func (e *EnvsubMigrationsError) Unwrap() error { return ErrEnvsubMigrations }

// EnvsubRisk says why migrations with environment substitution are refused.
const EnvsubRisk = "goose replaces ${VAR} in them from the environment of each process that applies them, " +
	"and the checksums cover the files as written, so they cannot prove that every tenant got the same SQL"

// checkEnvsub refuses migrations with environment substitution unless
// allowed, and logs them at warn level when allowed.
func checkEnvsub(source []migrator.SourceMigration, allow bool, logger *slog.Logger) error {
	var names []string
	for _, m := range source {
		if m.Envsub {
			names = append(names, m.Name)
		}
	}
	switch {
	case len(names) == 0:
		return nil
	case !allow:
		return &EnvsubMigrationsError{Names: names}
	}
	logger.Warn("migrations use goose environment substitution; starting anyway (AllowEnvsub): "+EnvsubRisk, "migrations", names)
	return nil
}
