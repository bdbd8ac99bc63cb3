package controlplane

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateTenantID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"a", true},
		{"7", true},
		{"acme", true},
		{"acme-corp_2", true},
		{"0-tenant", true},
		{strings.Repeat("a", 63), true},

		{"", false},
		{strings.Repeat("a", 64), false},
		{"Acme", false},
		{"ACME", false},
		{"-acme", false},
		{"_acme", false},
		{"../x", false},
		{"..", false},
		{"a/b", false},
		{`a\b`, false},
		{"a.b", false},
		{"a;drop", false},
		{"a'; DROP TABLE tenants; --", false},
		{`a"b`, false},
		{"a b", false},
		{" a", false},
		{"a\n", false},
		{"a\x00", false},
		{"a%2f", false},
		{"é", false},
		{"a$1", false},
	} {
		err := ValidateTenantID(tc.id)
		if tc.ok {
			require.NoError(t, err, "id %q", tc.id)
			continue
		}
		require.ErrorIs(t, err, ErrInvalid, "id %q", tc.id)
	}
}

func TestValidateSchemaName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"tenant_a", true},
		{"_x", true},
		{"a1", true},
		{strings.Repeat("s", 63), true},

		{"", false},
		{strings.Repeat("s", 64), false},
		{"1abc", false},
		{"Tenant", false},
		{"a-b", false},
		{"a;drop", false},
		{`a"b`, false},
		{"pg_catalog", false},
		{"pg_x", false},
		{"information_schema", false},
		{Schema, false},
		// The migrator refuses it, so the control plane must not store it: one
		// rule for both (schemaname.Validate).
		{"public", false},
	} {
		err := ValidateSchemaName(tc.name)
		if tc.ok {
			require.NoError(t, err, "schema %q", tc.name)
			continue
		}
		require.ErrorIs(t, err, ErrInvalid, "schema %q", tc.name)
	}
}

func TestValidateDatabaseURL(t *testing.T) {
	t.Parallel()
	const password = "Hunter2Secret"
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"postgres://app:" + password + "@db:5432/tenant", true},
		{"postgresql://app:" + password + "@db/tenant?sslmode=disable", true},
		{"postgres://db1:5432,db2:5433/tenant", true},
		{"postgres:///tenant?host=/var/run/postgresql", true},

		{"", false},
		{"host=db user=app password=" + password, false},
		{"mysql://app:" + password + "@db/tenant", false},
		{"http://app:" + password + "@db/tenant", false},
		{"postgres://app:" + password + "@db:notaport/tenant", false},
		{"postgres://app:" + password + "@db:5432/tenant?sslmode=bogus", false},
		{"postgres://app:" + password + "@[::1/tenant", false},
		{"postgres://app:" + password + "%zz@db/tenant", false},
		{"postgres://app:" + password + "@db/tenant?password=" + password + "&sslmode=bogus", false},
		{"postgres://app:pa/" + password + "@db:x/tenant", false},
		{"postgres://app:" + password + "\x00@db/tenant", false},
	} {
		err := ValidateDatabaseURL(tc.url)
		if tc.ok {
			require.NoError(t, err, "url %q", tc.url)
			continue
		}
		require.ErrorIs(t, err, ErrInvalid, "url %q", tc.url)
		require.NotContains(t, err.Error(), password, "url %q", tc.url)
	}
}

func TestTenantRedactedURL(t *testing.T) {
	t.Parallel()
	require.Equal(t, "postgres://app:xxxxx@db/tenant", Tenant{DatabaseURL: "postgres://app:pw@db/tenant"}.RedactedURL())
	require.Equal(t, "host=db password=xxxxx", Tenant{DatabaseURL: "host=db password=pw"}.RedactedURL())
}

// FuzzRedactURL builds URLs whose password holds a marker around fuzzed
// text (which may break the URL's structure) and checks that neither
// Tenant.RedactedURL nor ValidateDatabaseURL's error shows the marker.
func FuzzRedactURL(f *testing.F) {
	for _, seed := range [][4]string{
		{"app", "", "", "db:5432/tenant"},
		{"app", "p@", "", "db/tenant"},
		{"app", "a/", "b", "db/tenant"},
		{"app", "?", "#", "db/tenant"},
		{"a@u", "sec:", "", "h/db"},
		{"", "", "", "[::1]:5432/db?sslmode=disable"},
		{"app", "x", "y", "db/tenant?options=a@b"},
		{"app", "%", "%2", "db1,db2:5433/db"},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	const marker = "S3CR3T"
	f.Fuzz(func(t *testing.T, user, pwPrefix, pwSuffix, rest string) {
		s := "postgres://" + user + ":" + pwPrefix + marker + pwSuffix + "@" + rest
		if strings.Count(s, marker) != 1 {
			return // the marker is not only in the password
		}
		if got := (Tenant{DatabaseURL: s}).RedactedURL(); strings.Contains(got, marker) {
			t.Fatalf("RedactedURL(%q) = %q shows the password", s, got)
		}
		if err := ValidateDatabaseURL(s); err != nil && strings.Contains(err.Error(), marker) {
			t.Fatalf("ValidateDatabaseURL(%q) = %q shows the password", s, err)
		}
	})
}

// FuzzValidateTenantID checks that an accepted id is safe as a path element,
// an identifier and a notification payload.
func FuzzValidateTenantID(f *testing.F) {
	for _, seed := range []string{"acme", "../x", "a;drop", "A", "", strings.Repeat("a", 64)} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if ValidateTenantID(id) != nil {
			return
		}
		if id == "" || len(id) > 63 || strings.ContainsAny(id, "./\\;'\" \x00") || strings.ToLower(id) != id {
			t.Fatalf("ValidateTenantID accepted %q", id)
		}
	})
}
