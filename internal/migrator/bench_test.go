package migrator

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
)

// BenchmarkRunSetup measures the per-tenant work before the first round trip: parsing the URL,
// building the pool and the goose provider.
func BenchmarkRunSetup(b *testing.B) {
	m := newMigrator(b, Config{FS: examplemigrations.FS})
	target := Target{DatabaseURL: "postgres://tenant:pw@127.0.0.1:5432/tenant_42?application_name=bench", Schema: "tenant_42"}
	b.ReportAllocs()
	for b.Loop() {
		connCfg, err := m.connConfig(target)
		if err != nil {
			b.Fatal(err)
		}
		db := m.openDB(connCfg)
		if _, err := m.newProvider(db, target.Schema, VersionTable{Schema: target.Schema, Name: "goose_db_version"}, nil); err != nil {
			b.Fatal(err)
		}
		_ = db.Close()
	}
}

// BenchmarkMigrateUpToDate measures a run on a tenant with nothing pending, the steady state of
// a fleet: connect, check, disconnect.
func BenchmarkMigrateUpToDate(b *testing.B) {
	dbURL := newTestDB(b)
	m := newMigrator(b, Config{FS: examplemigrations.FS})
	for _, schema := range []string{"", "tenant_42"} {
		target := Target{DatabaseURL: dbURL, Schema: schema}
		_, err := m.Migrate(b.Context(), target)
		require.NoError(b, err)
		b.Run("Schema="+schema, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res, err := m.Migrate(b.Context(), target)
				if err != nil || len(res.Applied) > 0 {
					b.Fatal(res, err)
				}
			}
		})
	}
}
