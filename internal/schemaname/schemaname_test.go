package schemaname

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"acme", "_x", "tenant_42", "user", strings.Repeat("a", 63)} {
		if err := Validate(s); err != nil {
			t.Errorf("Validate(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{"", "9a", "Acme", "a-b", "a b", `a"b`, "pg_x", "information_schema", "public", "tenantmigrate", strings.Repeat("a", 64)} {
		if err := Validate(s); err == nil {
			t.Errorf("Validate(%q) = nil, want an error", s)
		}
	}
}
