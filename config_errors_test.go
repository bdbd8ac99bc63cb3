package tenantmigrate_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
)

// TestNewInvalidConfigWrapsErrInvalidConfig: every Config value New
// refuses before it connects is an error wrapping ErrInvalidConfig, so a
// caller can tell a configuration mistake from a control plane that is down.
func TestNewInvalidConfigWrapsErrInvalidConfig(t *testing.T) {
	t.Parallel()
	base := func() tenantmigrate.Config {
		return tenantmigrate.Config{DatabaseURL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1",
			Migrations: fleettest.Migrations("CREATE TABLE a (id int);")}
	}
	for name, mod := range map[string]func(*tenantmigrate.Config){
		"strategy typo":        func(c *tenantmigrate.Config) { c.Strategy = "fullfleet" },
		"regexp":               func(c *tenantmigrate.Config) { c.TenantHostRegexp = "(" },
		"regexp without group": func(c *tenantmigrate.Config) { c.TenantHostRegexp = "^x$" },
		"readonly workers":     func(c *tenantmigrate.Config) { c.ReadOnly, c.RunWorkers = true, true },
		"version table":        func(c *tenantmigrate.Config) { c.VersionTable = "goose_db_version" },
		"short key":            func(c *tenantmigrate.Config) { c.EncryptionKey = "short" },
		"workers":              func(c *tenantmigrate.Config) { c.Queue.Workers = -1 }, // the control case
	} {
		cfg := base()
		mod(&cfg)
		_, err := tenantmigrate.New(t.Context(), cfg)
		require.Error(t, err, name)
		require.ErrorIs(t, err, tenantmigrate.ErrInvalidConfig, "%s: %v", name, err)
	}
}
