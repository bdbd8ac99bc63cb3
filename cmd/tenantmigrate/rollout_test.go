package main

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestMigrateRolloutHaltsAndResumes: migrate --all with a broken release
// halts on the canary, exits 1 naming the rollout, the version and the
// error; the other tenants are untouched; status shows the halt; after
// the fix, rollout resume and migrate --all finish the fleet.
func TestMigrateRolloutHaltsAndResumes(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	db := pgtest.NewDatabase(t)
	for i := range 6 {
		args := []string{"--schema", fmt.Sprintf("t%d", i)}
		if i == 4 {
			args = append(args, "--label", "canary=yes")
		}
		f.add(fmt.Sprintf("t%d", i), db, args...)
	}
	v1 := writeMigrations(t, map[string]string{"00001_a.sql": "CREATE TABLE a (id int);"})
	requireCode(t, 0, f.run("migrate", "--all", "--migrations", v1, "--progress", "none"))

	broken := writeMigrations(t, map[string]string{"00001_a.sql": "CREATE TABLE a (id int);", "00002_b.sql": "ALTER TABLE nope ADD COLUMN x int;"})
	r := f.run("migrate", "--all", "--migrations", broken, "--progress", "none", "--canary-selector", "canary=yes", "--retries", "0")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "rollout 2 to version 2 halted: wave 1 of 1 tenants: 1 failed")
	require.Contains(t, r.stderr, "t4 (version 2)")
	require.Contains(t, r.stderr, `relation "nope" does not exist`)
	require.Contains(t, r.stderr, "tenantmigrate rollout resume 2")

	// Only the canary ran.
	for _, tn := range f.tenants() {
		if tn.ID == "t4" {
			require.Equal(t, "FAILED_STALE", string(tn.MigrationsStatus))
			continue
		}
		require.Equal(t, int64(1), *tn.MigrationsVersion, tn.ID)
		require.Equal(t, "COMPLETED", string(tn.MigrationsStatus), tn.ID)
	}

	r = f.run("status", "--json", "--migrations", broken)
	requireCode(t, 0, r)
	var st struct{ Rollout httpapi.RolloutJSON }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st), r.stdout)
	require.Equal(t, "HALTED", st.Rollout.State)
	require.Equal(t, int64(6), st.Rollout.Total)
	require.Len(t, st.Rollout.Waves, 2)
	r = f.run("status", "--migrations", broken)
	require.Regexp(t, `rollout:\s+2 to version 2, HALTED: 0 of 6 completed, 1 failed, wave 1 of 2`, r.stdout)

	// The same run again refuses to start anything.
	r = f.run("migrate", "--all", "--migrations", broken, "--progress", "none")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "rollout 2 to version 2 halted")
	r = f.run("migrate", "--tenant", "t0", "--migrations", broken, "--progress", "none")
	requireCode(t, 1, r)
	require.Contains(t, r.stdout+r.stderr, "is halted")

	// Fix, resume, finish.
	fixed := writeMigrations(t, map[string]string{"00001_a.sql": "CREATE TABLE a (id int);", "00002_b.sql": "ALTER TABLE a ADD COLUMN x int;"})
	r = f.run("rollout", "resume", "2", "--json")
	requireCode(t, 0, r)
	var ro httpapi.RolloutJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &ro), r.stdout)
	require.Equal(t, "RUNNING", ro.State)
	requireCode(t, 0, f.run("migrate", "--all", "--migrations", fixed, "--progress", "none"))
	r = f.run("rollout", "show", "2")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "COMPLETED")
	r = f.run("rollout", "list", "--json")
	requireCode(t, 0, r)
	var list []httpapi.RolloutJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	require.Len(t, list, 2)
	require.Equal(t, int64(6), list[0].Completed)

	// Errors: unknown, bad id, wrong state.
	requireCode(t, 1, f.run("rollout", "show", "99"))
	requireCode(t, 2, f.run("rollout", "show", "x"))
	r = f.run("rollout", "resume", "2")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "it is COMPLETED, not HALTED")
	requireCode(t, 2, f.run("migrate", "--all", "--waves", "0%"))
	requireCode(t, 2, f.run("migrate", "--all", "--halt-failure-rate", "200%"))
}
