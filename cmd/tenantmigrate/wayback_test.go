package main

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestTargetRollbackForceCLI: target set, show and clear; a rollback with a
// dry run first; a force; and bad input to each of them, refused with exit
// 2 (or 1 for a refused rollback) and a clear message.
func TestTargetRollbackForceCLI(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	db := pgtest.NewDatabase(t)
	f.add("acme", db)
	requireCode(t, 0, f.run("migrate", "--all", "--progress", "none"))

	r := f.run("target", "set", "3")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "pinned at 3")
	r = f.run("target", "show", "--json")
	requireCode(t, 0, r)
	var tgt struct {
		Version int64  `json:"version"`
		Pinned  *int64 `json:"pinned"`
		Latest  int64  `json:"latestVersion"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &tgt))
	require.Equal(t, int64(3), tgt.Version)
	require.Equal(t, int64(4), tgt.Latest)
	require.NotNil(t, tgt.Pinned)
	r = f.run("status")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "fleet target:")

	r = f.run("rollback", "--to", "2", "--tenant", "acme", "--dry-run")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "4, 3")
	r = f.run("rollback", "--to", "2", "--all", "--progress", "none")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "fleet target pinned at 2")
	st, err := f.orch().TenantState(t.Context(), "acme")
	require.NoError(t, err)
	require.Equal(t, int64(2), *st.MigrationsVersion)

	r = f.run("force", "--tenant", "acme", "--version", "1", "--progress", "none")
	requireCode(t, 0, r)
	st, err = f.orch().TenantState(t.Context(), "acme")
	require.NoError(t, err)
	require.Equal(t, int64(1), *st.MigrationsVersion)

	r = f.run("target", "clear")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "not pinned")

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"target", "set", "5"}, 2, "above the source's latest version, 4"},
		{[]string{"target", "set", "-1"}, 2, "-1"},
		{[]string{"target", "set", "x"}, 2, "want a version number"},
		{[]string{"target", "bogus"}, 2, "want target set V"},
		{[]string{"rollback", "--all"}, 2, "--to V"},
		{[]string{"rollback", "--to", "1"}, 2, "--all, --tenant ID (repeatable), --selector SEL or --rollout ID"},
		{[]string{"rollback", "--to", "1", "--all", "--selector", "a=b"}, 2, "choose the tenants one way"},
		{[]string{"rollback", "--to", "1", "--selector", "a=b,"}, 2, "--selector"},
		{[]string{"rollback", "--rollout", "999"}, 2, "rollout"},
		{[]string{"rollback", "--rollout", "-2"}, 2, "--rollout: want a rollout id"},
		{[]string{"rollback", "--to", "9", "--all"}, 2, "above the source's latest"},
		{[]string{"rollback", "--to", "1", "--tenant", "Bad!"}, 2, "--tenant"},
		{[]string{"rollback", "--to", "1", "--tenant", "nobody"}, 1, "not found"},
		{[]string{"force", "--tenant", "acme"}, 2, "--version"},
		{[]string{"force", "--version", "1"}, 2, "say which tenants"},
		{[]string{"force", "--tenant", "acme", "--version", "9"}, 2, "above the latest version"},
		{[]string{"force", "--all-above", "2", "--version", "1"}, 2, "leave out --version"},
	} {
		r := f.run(tc.args...)
		requireCode(t, tc.code, r)
		require.Contains(t, r.stderr, tc.want, "%v", tc.args)
	}
}
