package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// verifyReport is the output of verify --json.
type verifyReport struct {
	LatestVersion     int64                  `json:"latestVersion"`
	ChangedMigrations []changedMigrationJSON `json:"changedMigrations"`
	Tenants           []verifyTenantJSON     `json:"tenants"`
	Summary           verifySummary          `json:"summary"`
}

func verifyJSON(t *testing.T, r result) verifyReport {
	t.Helper()
	var rep verifyReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), "%s", r)
	return rep
}

// verifyTenants registers tenants directly (faster than the CLI): one with a
// database of its own, returned first, and n schema tenants sharing one.
func verifyTenants(t *testing.T, f *fleet, n int) (dbTenant string, dbURL string, schemaTenants []string) {
	t.Helper()
	o := f.orch()
	dbURL = pgtest.NewDatabase(t)
	_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: "solo", DatabaseURL: dbURL})
	require.NoError(t, err)
	shared := pgtest.NewDatabase(t)
	for i := range n {
		id := fmt.Sprintf("vt-%03d", i)
		_, err := o.CreateTenant(t.Context(), tenantmigrate.Tenant{ID: id, DatabaseURL: shared, Schema: fmt.Sprintf("vt_%03d", i)})
		require.NoError(t, err)
		schemaTenants = append(schemaTenants, id)
	}
	return "solo", dbURL, schemaTenants
}

// exampleDir writes the example migrations up to version maxVersion, as
// they are, into a new directory.
func exampleDir(t *testing.T, maxVersion int) string {
	t.Helper()
	dir := t.TempDir()
	entries, err := fs.ReadDir(examplemigrations.FS, ".")
	require.NoError(t, err)
	for _, e := range entries[:maxVersion] {
		data, err := fs.ReadFile(examplemigrations.FS, e.Name())
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644))
	}
	return dir
}

func TestVerifyConsistentFleet(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	// More schema tenants than a page of the control plane; never migrated.
	solo, _, many := verifyTenants(t, f, verifyPageSize+5)
	requireCode(t, 0, f.run("migrate", "--tenant", solo, "--tenant", many[0], "--progress", "none"))
	// One tenant behind: migrated by a build with versions 1 and 2 only.
	requireCode(t, 0, f.run("migrate", "--tenant", many[1], "--migrations", exampleDir(t, 2), "--progress", "none"))

	r := f.run("verify")
	requireCode(t, 0, r)
	total := len(many) + 1
	require.Equal(t, fmt.Sprintf("verified %d tenants against migrations up to version 4: %d consistent (%d of them behind the latest version)\n",
		total, total, total-2), r.stdout)

	r = f.run("verify", "--json", "--concurrency", "16")
	requireCode(t, 0, r)
	rep := verifyJSON(t, r)
	require.Equal(t, int64(4), rep.LatestVersion)
	require.Empty(t, rep.ChangedMigrations)
	require.Empty(t, rep.Tenants)
	require.Equal(t, verifySummary{Verified: int64(total), OK: int64(total), Behind: int64(total - 2)}, rep.Summary)

	r = f.run("verify", "--tenant", solo, "--tenant", many[1])
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "verified 2 tenants against migrations up to version 4: 2 consistent (1 of them behind the latest version)")
}

func TestVerifyReportsProblems(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	solo, soloURL, tenants := verifyTenants(t, f, 3)
	ok, tampered := tenants[0], tenants[1]
	requireCode(t, 0, f.run("migrate", "--tenant", solo, "--tenant", ok, "--tenant", tampered, "--progress", "none"))

	// solo: a version the migrations lack (a newer build, or someone by hand).
	execSQL(t, soloURL, `INSERT INTO goose_db_version (version_id, is_applied) VALUES (9, true)`)
	// tampered: the control plane says 2, the database is at 4.
	execSQL(t, f.url, `UPDATE tenantmigrate.tenants SET migrations_version = 2 WHERE id = $1`, tampered)
	// unreachable: nothing listens on its port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	const password = "Verify-Secret-pw"
	_, err = f.orch().CreateTenant(t.Context(), tenantmigrate.Tenant{ID: "gone", DatabaseURL: "postgres://app:" + password + "@" + addr + "/gone"})
	require.NoError(t, err)

	r := f.run("verify")
	requireCode(t, 1, r)
	require.Contains(t, r.stdout, "solo: ahead of the source: applied versions 9 that the source lacks\n")
	require.Contains(t, r.stdout, "solo: inconsistent: the control plane has it at version 4, its database is at version 9\n")
	require.Contains(t, r.stdout, tampered+": inconsistent: the control plane has it at version 2, its database is at version 4\n")
	require.Regexp(t, `(?m)^gone: unreachable: .*connect`, r.stdout)
	require.NotContains(t, r.stdout, ok+":")
	require.Contains(t, r.stdout, "verified 5 tenants against migrations up to version 4: 2 consistent (1 of them behind the latest version), 3 with problems (1 ahead, 2 inconsistent, 1 unreachable)\n")
	require.Contains(t, r.stderr, "error: found problems: 1 tenant ahead of the migrations, 2 inconsistent tenants, 1 unreachable tenant")
	require.NotContains(t, r.stdout+r.stderr, password)

	r = f.run("verify", "--json")
	requireCode(t, 1, r)
	rep := verifyJSON(t, r)
	require.Len(t, rep.Tenants, 3)
	byID := map[string]verifyTenantJSON{}
	for _, tn := range rep.Tenants {
		byID[tn.ID] = tn
	}
	require.Equal(t, []string{"ahead", "inconsistent"}, byID[solo].Problems)
	require.Equal(t, []int64{9}, byID[solo].Ahead)
	require.Equal(t, int64(9), *byID[solo].DatabaseVersion)
	require.Equal(t, int64(4), *byID[solo].ControlPlaneVersion)
	require.Equal(t, []string{"inconsistent"}, byID[tampered].Problems)
	require.Equal(t, int64(2), *byID[tampered].ControlPlaneVersion)
	require.Equal(t, int64(4), *byID[tampered].DatabaseVersion)
	require.Equal(t, []string{"unreachable"}, byID["gone"].Problems)
	require.Nil(t, byID["gone"].DatabaseVersion)
	require.Nil(t, byID["gone"].ControlPlaneVersion)
	require.NotEmpty(t, byID["gone"].Error)
	require.Equal(t, verifySummary{Verified: 5, OK: 2, Behind: 1, Ahead: 1, Inconsistent: 2, Unreachable: 1, Problems: 3}, rep.Summary)

	// One tenant at a time.
	requireCode(t, 0, f.run("verify", "--tenant", ok))
	r = f.run("verify", "--tenant", tampered)
	requireCode(t, 1, r)
	require.Contains(t, r.stdout, "1 with problems (0 ahead, 1 inconsistent, 0 unreachable)")
}

func TestVerifyReportsChangedMigrations(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	solo, _, _ := verifyTenants(t, f, 0)
	requireCode(t, 0, f.run("migrate", "--tenant", solo, "--progress", "none"))

	dir := exampleDir(t, 4)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	second := entries[1].Name()
	require.NoError(t, os.WriteFile(filepath.Join(dir, second), []byte("-- +goose Up\nSELECT 1;\n"), 0o644))

	// Other commands refuse to start.
	r := f.run("migrate", "--all", "--migrations", dir, "--progress", "none")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, second+" (checksum differs)")

	// verify reports it, and checks the tenants all the same.
	r = f.run("verify", "--migrations", dir)
	requireCode(t, 1, r)
	require.Contains(t, r.stdout, "migrations: "+second+": changed since it was applied (checksum differs)\n")
	require.Contains(t, r.stdout, "verified 1 tenant against migrations up to version 4: 1 consistent\n")
	require.Contains(t, r.stderr, "error: found problems: 1 changed migration\n")

	rep := verifyJSON(t, f.run("verify", "--migrations", dir, "--json"))
	require.Len(t, rep.ChangedMigrations, 1)
	require.Equal(t, second, rep.ChangedMigrations[0].Name)
	require.Equal(t, "checksum differs", rep.ChangedMigrations[0].Change)
	require.Equal(t, int64(2), rep.ChangedMigrations[0].Version)
}

func TestVerifyUsage(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	for _, args := range [][]string{
		{"verify", "--concurrency", "0"},
		{"verify", "--tenant-timeout", "0s"},
		{"verify", "--tenant", "Not Valid"},
		{"verify", "extra"},
	} {
		requireCode(t, 2, f.run(args...))
	}
	requireCode(t, 2, runCLI(t, "verify", "--database-url", f.url))
	r := f.run("verify", "--tenant", "nobody")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "nobody")
}
