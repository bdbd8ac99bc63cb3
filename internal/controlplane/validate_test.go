package controlplane

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
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
		{"public", true},
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

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"postgres://app:pw@db:5432/tenant", "postgres://app:xxxxx@db:5432/tenant"},
		{"postgres://app@db/tenant", "postgres://app@db/tenant"},
		{"postgres://db/tenant", "postgres://db/tenant"},
		{"postgres://app:@db/tenant", "postgres://app:xxxxx@db/tenant"},
		{"postgres://app:pw@db/tenant?sslmode=require&password=pw2", "postgres://app:xxxxx@db/tenant?sslmode=require&password=xxxxx"},
		{"postgres://db/tenant?sslpassword=pw&PassWord=pw2&p%61ssword=pw3", "postgres://db/tenant?sslpassword=xxxxx&PassWord=xxxxx&p%61ssword=xxxxx"},
		{"postgresql://app:p%40ss@db1:5432,db2:5433/tenant", "postgresql://app:xxxxx@db1:5432,db2:5433/tenant"},
		// Unencoded special characters in the password.
		{"postgres://app:p@ss@db/tenant", "postgres://app:xxxxx@db/tenant"},
		{"postgres://app:pa/ss@db/tenant", "postgres://xxxxx@db/tenant"},
		{"postgres://app:pa?ss@db/tenant", "postgres://app:xxxxx@db/tenant"},
		{"postgres://app:12#ss@db/tenant", "postgres://app:xxxxx@db/tenant"},
		{"postgres://a@u:sec:ret@h/db", "postgres://a@u:xxxxx@h/db"},
		{"host=db password=pw", "(redacted: not a URL)"},
		{"", "(redacted: not a URL)"},
	} {
		require.Equal(t, tc.want, RedactURL(tc.in), "RedactURL(%q)", tc.in)
	}

	tenant := Tenant{DatabaseURL: "postgres://app:pw@db/tenant"}
	require.Equal(t, "postgres://app:xxxxx@db/tenant", tenant.RedactedURL())
}

// FuzzRedactURL builds URLs whose password holds a marker around fuzzed
// text (which may break the URL's structure) and checks that neither
// RedactURL nor ValidateDatabaseURL's error shows the marker.
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
		if got := RedactURL(s); strings.Contains(got, marker) {
			t.Fatalf("RedactURL(%q) = %q shows the password", s, got)
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

// FuzzRedactURLDriverPassword checks RedactURL against the driver: whatever
// pgconn takes as the password of a URL it accepts does not show.
func FuzzRedactURLDriverPassword(f *testing.F) {
	for _, seed := range []string{
		"postgres://app:pw-secret@db:5432/tenant",
		"postgres://app:pw-secret@db/tenant?sslmode=disable",
		"postgres://db/tenant?password=pw-secret",
		"postgres://db/tenant?p%61ssword=pw-secret",
		"postgres://app:pw?secret@db/tenant",
		"postgres://app:pw#secret@db/tenant",
		"postgresql://app:pw%40secret@db1,db2:5433/tenant",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := pgconn.ParseConfig(s)
		if err != nil || len(cfg.Password) < 6 || strings.Count(s, cfg.Password) != 1 {
			return
		}
		if got := RedactURL(s); strings.Contains(got, cfg.Password) {
			t.Fatalf("RedactURL(%q) = %q shows the password %q", s, got, cfg.Password)
		}
	})
}
