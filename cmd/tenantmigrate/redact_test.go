package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// cliPassword is the password of the control-plane and tenant URLs that the
// CLI must not print.
const cliPassword = "S3cret-Passw0rd"

// TestCLIErrorsNeverContainPassword runs commands with control-plane URLs
// that do not parse (a space after '=' defeated pgx's own masking) or do not
// connect, and tenant URLs that do not parse: stderr names the problem and
// shows none of the password.
func TestCLIErrorsNeverContainPassword(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"StatusSpaceAfterEquals":  {[]string{"status", "--database-url", "host=127.0.0.1 port=x password= " + cliPassword + " user=u"}, "parse control-plane database URL"},
		"StatusSpacesAroundEqual": {[]string{"status", "--database-url", "host=127.0.0.1 port=x password = " + cliPassword + " user=u"}, "password=xxxxx"},
		"StatusUnreachable":       {[]string{"status", "--database-url", "host=127.0.0.1 port=1 password= " + cliPassword + " user=u"}, "127.0.0.1"},
		"ListURLBadPort":          {[]string{"tenants", "list", "--database-url", "postgres://u:" + cliPassword + "@127.0.0.1:x/db", "--encryption-key", testKey}, "postgres://u:xxxxx@127.0.0.1:x/db"},
		"AddUnencodedSlash":       {[]string{"tenants", "add", "acme", "postgres://u:pa/" + cliPassword + "@127.0.0.1:x/db", "--database-url", "postgres://127.0.0.1:1/cp", "--encryption-key", testKey}, "database URL postgres://xxxxx@127.0.0.1:x/db"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, tc.args...)
			require.NotEqual(t, 0, r.code, "%s", r)
			require.NotContains(t, r.stderr, cliPassword, "%s", r)
			require.NotContains(t, r.stdout, cliPassword, "%s", r)
			require.Contains(t, r.stderr, tc.want, "%s", r)
		})
	}
}

// TestCLIErrorsNeverContainPasswordFromEnv is the same with the URL in
// DATABASE_URL. Not parallel: it sets the environment.
func TestCLIErrorsNeverContainPasswordFromEnv(t *testing.T) {
	t.Setenv("DATABASE_URL", "host=127.0.0.1 port=x password= "+cliPassword+" user=u")
	r := runCLI(t, "status")
	require.NotEqual(t, 0, r.code, "%s", r)
	require.NotContains(t, r.stderr, cliPassword, "%s", r)
	require.Contains(t, r.stderr, "password=xxxxx user=u", "%s", r)
}
