package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func TestTenantsRoundTrip(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	const secretURL = "postgres://app:hunter2secret@db.example.com:5432/acme?sslmode=disable"

	// add prints the tenant with its URL redacted.
	r := f.run("tenants", "add", "acme", secretURL)
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "added tenant acme")
	require.Contains(t, r.stdout, "postgres://app:xxxxx@db.example.com:5432/acme")
	require.NotContains(t, r.stdout+r.stderr, "hunter2secret")

	requireCode(t, 0, f.run("tenants", "add", "globex", "postgres://app@db.example.com/shared", "--schema", "globex"))

	// A URL of "-" is read from standard input.
	var stdout, stderr bytes.Buffer
	root := newRootCmd(&stdout, &stderr)
	root.SetIn(strings.NewReader("postgres://app:fromstdin@db.example.com/initech\n"))
	root.SetArgs([]string{"tenants", "add", "initech", "-", "--database-url", f.url, "--encryption-key", testKey})
	require.NoError(t, root.ExecuteContext(t.Context()), stderr.String())
	require.NotContains(t, stdout.String(), "fromstdin")

	// list: a table in the order of addition, URLs redacted.
	r = f.run("tenants", "list")
	requireCode(t, 0, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 4, r.stdout)
	require.Regexp(t, `^ID\s+SCHEMA\s+VERSION\s+STATUS\s+URL\s+UPDATED\s+LABELS$`, lines[0])
	require.Regexp(t, `^acme\s+-\s+-\s+-\s+postgres://app:xxxxx@db.example.com:5432/acme\?sslmode=disable\s+\d{4}-`, lines[1])
	require.Regexp(t, `^globex\s+globex\s+`, lines[2])
	require.Regexp(t, `^initech\s+`, lines[3])
	require.NotContains(t, r.stdout, "hunter2secret")

	// list --json: an array.
	r = f.run("tenants", "list", "--json")
	requireCode(t, 0, r)
	var list []httpapi.TenantJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
	require.Len(t, list, 3)
	require.Equal(t, "acme", list[0].ID)
	require.Equal(t, "postgres://app:xxxxx@db.example.com:5432/acme?sslmode=disable", list[0].DatabaseURL)
	require.Nil(t, list[0].MigrationsVersion)
	require.Nil(t, list[0].MigrationsStatus)
	require.Equal(t, "globex", list[1].Schema)
	require.Equal(t, "initech", list[2].ID)

	// get, as text and JSON.
	r = f.run("tenants", "get", "globex")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^id:\s+globex$`, r.stdout)
	require.Regexp(t, `(?m)^schema:\s+globex$`, r.stdout)
	r = f.run("tenants", "get", "acme", "--json")
	requireCode(t, 0, r)
	var one httpapi.TenantJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &one), r.stdout)
	require.Equal(t, "acme", one.ID)
	require.NotContains(t, r.stdout, "hunter2secret")

	// rm, then the tenant is gone.
	r = f.run("tenants", "rm", "acme")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "removed tenant acme")
	r = f.run("tenants", "get", "acme")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "no tenant acme")
	r = f.run("tenants", "rm", "acme")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "no tenant acme")

	r = f.run("tenants", "list", "--json")
	requireCode(t, 0, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list))
	require.Len(t, list, 2)
}

func TestTenantsListEmpty(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	r := f.run("tenants", "list", "--json")
	requireCode(t, 0, r)
	var list []httpapi.TenantJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
	require.Empty(t, list)
	require.NotNil(t, list, "an empty fleet is [], not null")

	r = f.run("tenants", "list")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "no tenants")
}

func TestTenantsAddErrors(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.add("acme", "postgres://app@db.example.com/acme")

	t.Run("Duplicate", func(t *testing.T) {
		t.Parallel()
		r := f.run("tenants", "add", "acme", "postgres://app@db.example.com/other")
		requireCode(t, 1, r)
		require.Contains(t, r.stderr, "tenant acme already exists")
	})

	t.Run("InvalidURL", func(t *testing.T) {
		t.Parallel()
		for _, u := range []string{
			"postgres://app:s3cretPassw0rd@db.example.com:notaport/acme",
			"mysql://app:s3cretPassw0rd@db.example.com/acme",
			"postgres://app:s3cretPassw0rd@db.example.com/acme?sslmode=bogus",
		} {
			r := f.run("tenants", "add", "newco", u)
			requireCode(t, 1, r)
			require.Contains(t, r.stderr, "invalid database URL")
			require.NotContains(t, r.stdout+r.stderr, "s3cretPassw0rd")
		}
	})

	t.Run("InvalidID", func(t *testing.T) {
		t.Parallel()
		r := f.run("tenants", "add", "Not Valid!", "postgres://app@db.example.com/acme")
		requireCode(t, 1, r)
		require.Contains(t, r.stderr, "invalid tenant id")
	})

	t.Run("InvalidSchema", func(t *testing.T) {
		t.Parallel()
		r := f.run("tenants", "add", "newco", "postgres://app@db.example.com/acme", "--schema", "pg_nope")
		requireCode(t, 1, r)
		require.Contains(t, r.stderr, "invalid schema name")
	})

	t.Run("NoKey", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, "tenants", "add", "newco", "postgres://app@db.example.com/acme", "--database-url", f.url, "--encryption-key", "")
		requireCode(t, 1, r)
		require.Contains(t, r.stderr, "ENCRYPTION_KEY")
		r = runCLI(t, "tenants", "list", "--database-url", f.url, "--encryption-key", "")
		requireCode(t, 1, r)
		require.Contains(t, r.stderr, "ENCRYPTION_KEY")
	})

	t.Run("WrongArgs", func(t *testing.T) {
		t.Parallel()
		requireCode(t, 2, f.run("tenants", "add", "acme"))
		requireCode(t, 2, f.run("tenants", "get"))
		requireCode(t, 2, f.run("tenants", "frobnicate"))
	})

	t.Run("NoDatabaseURL", func(t *testing.T) {
		t.Parallel()
		r := runCLI(t, "tenants", "list", "--database-url", "", "--encryption-key", testKey)
		requireCode(t, 2, r)
		require.Contains(t, r.stderr, "DATABASE_URL")
	})

	t.Run("Unreachable", func(t *testing.T) {
		t.Parallel()
		// A control plane that does not answer: exit 1 and no password.
		r := runCLI(t, "tenants", "list", "--database-url", "postgres://u:cpSecretPw@127.0.0.1:1/cp?connect_timeout=2", "--encryption-key", testKey)
		requireCode(t, 1, r)
		require.NotContains(t, r.stdout+r.stderr, "cpSecretPw")
	})
}

// TestTenantsDatabase checks a tenant added by the CLI can be migrated: the
// URL stored is the one given.
func TestTenantsDatabase(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	f.add("acme", pgtest.NewDatabase(t))
	r := f.run("migrate", "--tenant", "acme", "--progress", "none")
	requireCode(t, 0, r)
	r = f.run("tenants", "get", "acme")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^version:\s+4$`, r.stdout)
	require.Regexp(t, `(?m)^status:\s+COMPLETED$`, r.stdout)
}

func TestTenantsLabels(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	const u = "postgres://app@db.example.com/x"

	r := f.run("tenants", "add", "acme", u, "--label", "tier=gold", "--label", "server=db1")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "labels:  server=db1,tier=gold")
	requireCode(t, 0, f.run("tenants", "add", "globex", u, "--label", "tier=silver,canary=yes"))
	requireCode(t, 0, f.run("tenants", "add", "initech", u))

	// Bad labels are usage errors naming the label; nothing is added.
	r = f.run("tenants", "add", "bad", u, "--label", "Tier=x")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, `"Tier"`)
	r = f.run("tenants", "add", "bad", u, "--label", "tier")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "KEY=VALUE")

	// label sets and removes, keeping the others.
	r = f.run("tenants", "label", "acme", "canary=yes", "tier-")
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "labelled tenant acme: canary=yes,server=db1")
	requireCode(t, 2, f.run("tenants", "label", "acme", "a b=c"))
	r = f.run("tenants", "label", "nosuch", "a=b")
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "no tenant nosuch")

	ids := func(sel string) []string {
		r := f.run("tenants", "list", "--json", "--selector", sel)
		requireCode(t, 0, r)
		var list []httpapi.TenantJSON
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &list), r.stdout)
		var out []string
		for _, tn := range list {
			out = append(out, tn.ID)
		}
		return out
	}
	require.Equal(t, []string{"acme", "globex"}, ids("canary=yes"))
	require.Equal(t, []string{"globex"}, ids("canary,tier"))
	require.Equal(t, []string{"initech"}, ids("!canary"))
	require.Equal(t, []string{"acme", "initech"}, ids("tier!=silver"))

	r = f.run("tenants", "list", "--selector", "server=db1")
	requireCode(t, 0, r)
	require.Regexp(t, `(?m)^acme\s.*canary=yes,server=db1$`, r.stdout)
	require.NotContains(t, r.stdout, "globex")
	r = f.run("tenants", "list", "--selector", "a=b=c")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "--selector")
}
