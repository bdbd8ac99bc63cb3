package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	f := newFleet(t)

	// An empty fleet.
	r := f.run("status")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^latest version:\s+4$`, r.stdout)
	require.Contains(t, r.stdout, "no tenants")

	// Two tenants migrated, one FAILED at version 1, one never migrated.
	ids := addSchemaTenants(f, "st", 4)
	requireCode(t, 0, f.run("migrate", "--tenant", ids[0], "--tenant", ids[1], "--progress", "none"))
	bad := writeMigrations(t, map[string]string{
		"00001_one.sql": "CREATE TABLE one (id int);",
		"00002_two.sql": "SELECT broken syntax here;",
	})
	// Without the flag the edited source is refused, and the CLI names the flag.
	r = f.run("migrate", "--tenant", ids[2], "--migrations", bad, "--progress", "none")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "--allow-changed-migrations")
	requireCode(t, 1, f.run("migrate", "--tenant", ids[2], "--migrations", bad, "--progress", "none", "--allow-changed-migrations"))

	// The status needs no encryption key.
	r = runCLI(t, "status", "--json", "--database-url", f.url, "--migrations", f.migrations)
	requireCode(t, 0, r)
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Equal(t, int64(4), *rep.LatestVersion)
	require.Equal(t, int64(4), rep.Total)
	require.Equal(t, int64(2), *rep.AtLatest)
	require.Equal(t, int64(2), *rep.Behind)
	require.Equal(t, map[string]int64{"COMPLETED": 2, "FAILED": 1, "NEVER_MIGRATED": 1}, rep.ByStatus)
	require.Len(t, rep.ByVersion, 3)
	require.Nil(t, rep.ByVersion[0].Version)
	require.Equal(t, int64(1), rep.ByVersion[0].Count)
	require.Equal(t, int64(1), *rep.ByVersion[1].Version)
	require.Equal(t, int64(1), rep.ByVersion[1].Count)
	require.Equal(t, int64(4), *rep.ByVersion[2].Version)
	require.Equal(t, int64(2), rep.ByVersion[2].Count)
	require.Equal(t, int64(1), rep.Failed.Count)
	require.Len(t, rep.Failed.Tenants, 1)
	require.Equal(t, ids[2], rep.Failed.Tenants[0].ID)
	require.Equal(t, "FAILED", rep.Failed.Tenants[0].MigrationsStatus)
	require.Contains(t, rep.Failed.Tenants[0].LastError, "syntax")
	require.NotNil(t, rep.Remaining)
	require.Zero(t, *rep.Remaining)

	// The same as tables.
	r = f.run("status")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^tenants:\s+4 \(2 at the latest version, 2 behind\)$`, r.stdout)
	require.Regexp(t, `(?m)^queued jobs:\s+0$`, r.stdout)
	require.Regexp(t, `(?m)^- \(never\)\s+1\s+█+$`, r.stdout)
	require.Regexp(t, `(?m)^1\s+1\s+█+$`, r.stdout)
	require.Regexp(t, `(?m)^4 \(latest\)\s+2\s+█{40}$`, r.stdout)
	require.Regexp(t, `(?m)^COMPLETED\s+2$`, r.stdout)
	require.Regexp(t, `(?m)^FAILED\s+1$`, r.stdout)
	require.Regexp(t, `(?m)^FAILED_STALE\s+0$`, r.stdout)
	require.Regexp(t, `(?m)^failed tenants: 1$`, r.stdout)
	require.Regexp(t, `(?m)^`+ids[2]+`\s+FAILED\s+1\s+\S+ \S+\s+.*syntax`, r.stdout)

	// --failed-limit cuts the list, not the count.
	requireCode(t, 1, f.run("migrate", "--tenant", ids[3], "--migrations", bad, "--progress", "none", "--allow-changed-migrations"))
	r = f.run("status", "--failed-limit", "1")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "failed tenants: 2 (the first 1)")
	r = f.run("status", "--json", "--failed-limit", "0")
	requireCode(t, 0, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Equal(t, int64(2), rep.Failed.Count)
	require.Empty(t, rep.Failed.Tenants)
}

// TestStatusWithoutMigrations: status needs no migrations; the latest
// version is then unknown, and null in JSON, and the rest is shown.
func TestStatusWithoutMigrations(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ids := addSchemaTenants(f, "nomig", 2)
	requireCode(t, 0, f.run("migrate", "--tenant", ids[0], "--progress", "none"))
	f.migrations = ""

	r := f.run("status", "--json")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, `"latestVersion": null`)
	var rep statusReport
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	require.Nil(t, rep.LatestVersion)
	require.Nil(t, rep.Behind)
	require.Equal(t, int64(2), rep.Total)
	require.Equal(t, map[string]int64{"COMPLETED": 1, "NEVER_MIGRATED": 1}, rep.ByStatus)

	r = f.run("status")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^latest version:\s+unknown \(give --migrations`, r.stdout)
	require.Regexp(t, `(?m)^tenants:\s+2$`, r.stdout)
	require.Regexp(t, `(?m)^4\s+1\s+█+$`, r.stdout)
}
