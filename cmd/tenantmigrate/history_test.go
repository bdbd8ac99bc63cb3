package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/examplemigrations"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// TestHistory: `migrate` runs show in `history`, newest first, as a table
// and as JSON, with the batch attempt and a failure's error; --limit bounds
// them; an unknown tenant and bad flags are errors.
func TestHistory(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	ids := addSchemaTenants(f, "hi", 1)
	id := ids[0]

	r := f.run("history", id)
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "has no runs")

	// Version 1 as in the fleet's set, then a broken version 2.
	v1, err := examplemigrations.FS.ReadFile("00001_create_users.sql")
	require.NoError(t, err)
	bad := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bad, "00001_create_users.sql"), v1, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(bad, "00002_two.sql"), []byte("-- +goose Up\nSELECT broken syntax here;\n"), 0o644))
	requireCode(t, 1, f.run("migrate", "--tenant", id, "--migrations", bad, "--progress", "none"))
	requireCode(t, 0, f.run("migrate", "--tenant", id, "--progress", "none"))

	// Needs no encryption key.
	r = runCLI(t, "history", id, "--json", "--database-url", f.url)
	requireCode(t, 0, r)
	var runs []httpapi.RunJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &runs), r.stdout)
	require.Len(t, runs, 2)
	require.Equal(t, "completed", runs[0].Result)
	require.Equal(t, "batch", runs[0].Trigger)
	require.Equal(t, 1, runs[0].Attempt)
	require.Equal(t, int64(4), *runs[0].ToVersion)
	require.Equal(t, "failed", runs[1].Result)
	require.Contains(t, runs[1].Error, "syntax")
	require.Nil(t, runs[1].FromVersion)
	require.Equal(t, int64(1), *runs[1].ToVersion)

	r = f.run("history", id)
	requireCode(t, 0, r)
	require.Regexp(t, `STARTED\s+DURATION\s+TRIGGER\s+ATTEMPT\s+FROM\s+TO\s+RESULT\s+PROCESS\s+ERROR`, r.stdout)
	require.Regexp(t, `(?m)^\S+ \S+\s+\S+\s+batch\s+1\s+1\s+4\s+completed\s`, r.stdout)
	require.Regexp(t, `(?m)^\S+ \S+\s+\S+\s+batch\s+1\s+-\s+1\s+failed\s+\S+\s+.*syntax`, r.stdout)

	r = runCLI(t, "history", id, "--limit", "1", "--json", "--database-url", f.url)
	requireCode(t, 0, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &runs), r.stdout)
	require.Len(t, runs, 1)
	require.Equal(t, "completed", runs[0].Result)

	r = f.run("history", "nobody")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "no tenant nobody")
	requireCode(t, 1, f.run("history", "Bad!"))
	requireCode(t, 2, f.run("history", id, "--limit", "-1"))
	requireCode(t, 2, f.run("history"))
}
