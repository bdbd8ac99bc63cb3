package migrator

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
)

func TestValidateSchemaName(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"a", "_", "tenant_1", "t" + strings.Repeat("x", 62), "user", "select", "pgx", "p_g", "publicity"} {
		require.NoError(t, ValidateSchemaName(s), s)
	}
	for _, s := range []string{
		"", "1tenant", "Tenant", "tenant-1", "tenant 1", `te"nant`, "ténant", "t" + strings.Repeat("x", 63),
		"pg_catalog", "pg_temp", "pg_", "information_schema", "public", "a.b", "a;drop",
	} {
		require.Error(t, ValidateSchemaName(s), s)
	}
}

func FuzzValidateSchemaName(f *testing.F) {
	for _, s := range []string{"tenant_1", "", "public", "pg_x", "Tenant", "a\x00b", `a"b`, "ä", strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateSchemaName(s) != nil {
			return
		}
		// A valid name is a plain lowercase identifier that quoting leaves unchanged, that
		// PostgreSQL keeps whole and that is no system schema.
		if len(s) == 0 || len(s) > 63 {
			t.Fatalf("accepted %q of length %d", s, len(s))
		}
		if (pgx.Identifier{s}).Sanitize() != `"`+s+`"` {
			t.Fatalf("accepted %q that quoting changes", s)
		}
		if strings.ToLower(s) != s || strings.HasPrefix(s, "pg_") || s == "public" || s == "information_schema" {
			t.Fatalf("accepted %q", s)
		}
		for _, r := range s {
			if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
				t.Fatalf("accepted %q with %q", s, r)
			}
		}
	})
}

func TestLockKey(t *testing.T) {
	t.Parallel()
	// The keys must never change: processes of different releases that run during a rolling
	// deploy must exclude each other.
	require.Equal(t, int64(-8327515241010438460), lockKey(""))
	require.Equal(t, int64(899299540271671312), lockKey("tenant_a"))
	require.NotEqual(t, lockKey("tenant_a"), lockKey("tenant_b"))
	require.NotEqual(t, lockKey(""), lockKey("tenant_a"))
}
