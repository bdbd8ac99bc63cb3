// Package fleettest holds the test helpers that several packages share to
// set up a fleet of tenants on the test PostgreSQL (see pgtest) and to check
// what it holds: the versions applied in each tenant schema, the tenants the
// control plane lists as migrated, the migrate_tenant jobs queued per tenant.
// Import it from _test.go files only.
//
// It depends on no package of this module but controlplane and pgtest, so
// that the internal tests of the root package can use it too.
package fleettest

import (
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// SchemaTenant is a tenant that owns one schema of a shared database.
type SchemaTenant struct {
	ID, URL, Schema string
}

// NewSchemaTenants creates dbs databases (pgtest.NewDatabase) with perDB
// tenants each, named prefix-000, prefix-001, ... and owning the schemas
// s_000, s_001, ..., and calls register for each tenant in that order; it
// returns them in the same order. The schemas themselves are created by the
// first migration run.
func NewSchemaTenants(tb testing.TB, prefix string, dbs, perDB int, register func(SchemaTenant)) []SchemaTenant {
	tb.Helper()
	var tenants []SchemaTenant
	for range dbs {
		url := pgtest.NewDatabase(tb)
		for range perDB {
			n := len(tenants)
			tn := SchemaTenant{ID: fmt.Sprintf("%s-%03d", prefix, n), URL: url, Schema: fmt.Sprintf("s_%03d", n)}
			register(tn)
			tenants = append(tenants, tn)
		}
	}
	return tenants
}

// IDs returns the ids of tenants, in order.
func IDs(tenants []SchemaTenant) []string {
	ids := make([]string, len(tenants))
	for i, tn := range tenants {
		ids[i] = tn.ID
	}
	return ids
}

// Migrations builds a goose source whose version i+1 (file
// "0000N_vN.sql") runs ups[i]. An entry that starts with "-- +goose" is used
// as the whole file; any other is the body of "-- +goose Up". goose ends a
// statement at a line ending in ";", so a DO block must sit on one line.
func Migrations(ups ...string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for i, up := range ups {
		if !strings.HasPrefix(up, "-- +goose") {
			up = "-- +goose Up\n" + up + "\n"
		}
		fsys[fmt.Sprintf("%05d_v%d.sql", i+1, i+1)] = &fstest.MapFile{Data: []byte(up)}
	}
	return fsys
}
