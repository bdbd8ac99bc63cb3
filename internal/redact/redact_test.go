package redact_test

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/redact"
)

// TestErrorParseConfig parses connection strings that pgx rejects and checks
// that the scrubbed error shows none of the password, that the chain
// survives, and that the message still says what is wrong.
func TestErrorParseConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		connString string
		hidden     []string // the password and fragments of it
		shown      string   // what the message must still say
	}{
		// URLs.
		{"postgres://u:s3cr3t@h:x/db", []string{"s3cr3t"}, "postgres://u:xxxxx@h:x/db"},
		{"postgres://u@h:x/db?password=s3cr3t", []string{"s3cr3t"}, "password=xxxxx"},
		{"postgres://u@h:x/db?sslpassword=s3cr3t&sslmode=disable", []string{"s3cr3t"}, "sslpassword=xxxxx&sslmode=disable"},
		{"postgres://u@h:x/db?p%61ssword=s3cr3t", []string{"s3cr3t"}, "p%61ssword=xxxxx"},
		{"postgres://u:s3%40cr3t@h:x/db", []string{"s3%40cr3t", "s3@cr3t", "cr3t"}, "invalid port"},
		{"postgres://u:s3@cr3t@h:x/db", []string{"s3@cr3t", "cr3t"}, "invalid port"},
		{"postgres://u:s3/cr3t@h:x/db", []string{"s3/cr3t", "cr3t"}, "invalid port"},
		{"postgres://u:s3?cr3t@h:x/db", []string{"s3?cr3t", "cr3t"}, "cannot parse"},
		{"postgres://u:s3cr3t%zz@h/db", []string{"s3cr3t"}, "invalid percent-encoded token"},
		{"postgres://a@u:s3c:r3t@h/db", []string{"s3c:r3t", "r3t"}, "invalid port"},
		// Keyword/value strings, with another error elsewhere (port=x).
		{"host=h port=x password=s3cr3t user=u", []string{"s3cr3t"}, "host=h port=x password=xxxxx user=u"},
		{"host=h port=x password = s3cr3t user=u", []string{"s3cr3t"}, "password=xxxxx user=u"},
		{"host=h port=x password= s3cr3t user=u", []string{"s3cr3t"}, "password=xxxxx user=u"},
		{"host=h port=x password =s3cr3t", []string{"s3cr3t"}, "password=xxxxx"},
		{"host=h port=x password=\ts3cr3t\nuser=u", []string{"s3cr3t"}, "password=xxxxx user=u"},
		{"password= s3cr3t port=x", []string{"s3cr3t"}, "password=xxxxx port=x"},
		{`host=h port=x password='s3 cr\'et' user=u`, []string{"s3", "cr'et", `cr\'et`, "et'"}, "password=xxxxx user=u"},
		{`host=h port=x password='s3 \\cr3t' user=u`, []string{"s3", "cr3t"}, "password=xxxxx user=u"},
		{`host=h port=x password=s3\ cr3t user=u`, []string{"s3", "cr3t"}, "password=xxxxx user=u"},
		{`host=h port=x password="s3cr3t" user=u`, []string{"s3cr3t"}, "password=xxxxx user=u"},
		{"host=h port=x sslpassword=s3cr3t", []string{"s3cr3t"}, "sslpassword=xxxxx"},
		{"host=h port=x password=s3%40cr3t", []string{"s3%40cr3t", "s3@cr3t", "cr3t"}, "password=xxxxx"},
		// Keyword/value strings libpq cannot read.
		{"host=h password=s3 cr3t user=u", []string{"s3", "cr3t"}, `missing "=" after "xxxxx"`},
		{"host=h password='s3cr3t user=u", []string{"s3cr3t"}, "unterminated quoted string"},
		{"host=h application_name='a password=s3cr3t", []string{"s3cr3t"}, "unterminated quoted string"},
		{"host=h password=s3cr3t port", []string{"s3cr3t"}, "invalid keyword/value"},
		{"s3cr3t", []string{"s3cr3t"}, "invalid keyword/value"},
		{"POSTGRES://u:s3cr3t@h/db", []string{"s3cr3t"}, "invalid keyword/value"},
	} {
		_, parseErr := pgconn.ParseConfig(tc.connString)
		require.Error(t, parseErr, tc.connString)
		wrapped := fmt.Errorf("parse target database url: %w", parseErr)

		for name, err := range map[string]error{
			"with the connection string": redact.Error(wrapped, tc.connString),
			"from the ParseConfigError":  redact.Error(wrapped),
		} {
			msg := err.Error()
			for _, h := range tc.hidden {
				require.NotContains(t, msg, h, "%s %q: %s", name, tc.connString, msg)
			}
			require.Contains(t, msg, tc.shown, "%s %q", name, tc.connString)
			require.True(t, strings.HasPrefix(msg, "parse target database url: cannot parse `"), msg)
			var pce *pgconn.ParseConfigError
			require.ErrorAs(t, err, &pce, "the chain survives")
			require.Equal(t, tc.connString, pce.ConnString)
		}
	}
}

// TestErrorChain checks that the scrubbed error keeps errors.Is and
// errors.As working, masks every form of the password, and is err itself
// when there is nothing to mask.
func TestErrorChain(t *testing.T) {
	t.Parallel()
	sentinel := errors.New("sentinel")
	inner := &net.OpError{Op: "dial", Err: fmt.Errorf("user:hunter2@db, p%%40ss, p@ss: %w", sentinel)}
	err := redact.Error(fmt.Errorf("connect: %w", inner), "postgres://user:hunter2@db/x", "postgres://u:p%40ss@db/x")
	require.Equal(t, "connect: dial: user:xxxxx@db, xxxxx, xxxxx: sentinel", err.Error())
	require.ErrorIs(t, err, sentinel)
	var opErr *net.OpError
	require.ErrorAs(t, err, &opErr)

	plain := errors.New("nothing secret")
	require.Same(t, plain, redact.Error(plain, "postgres://user:hunter2@db/x"))
	require.NoError(t, redact.Error(nil, "postgres://user:hunter2@db/x"))
	require.Equal(t, "wrapped: connect: dial: user:xxxxx@db, xxxxx, xxxxx: sentinel", fmt.Errorf("wrapped: %w", err).Error())
}

// TestMaskAvoidsPasswordCharacters checks that a password made of the mask's
// character is masked with another one, not shown as part of the mask.
func TestMaskAvoidsPasswordCharacters(t *testing.T) {
	t.Parallel()
	for _, pw := range []string{"x", "xxx", "xxxxxxx", "ax", "x*#~"} {
		dsn := "postgres://u:" + pw + "@h:x/db"
		_, err := pgconn.ParseConfig(dsn)
		msg := redact.Error(err).Error()
		require.NotContains(t, msg, pw, "%q: %s", pw, msg)
		require.Contains(t, msg, "invalid port")
		require.NotContains(t, redact.URL("postgres://u:"+pw+"@h/db"), pw)
	}
	require.Equal(t, "postgres://u:*****@h/db", redact.URL("postgres://u:xyz@h/db"))
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	for connString, want := range map[string][]string{
		"postgres://u@h/db":                      nil,
		"host=h user=u":                          nil,
		"":                                       nil,
		"postgres://u:p:w@h/db":                  {"p%3Aw", "p:w"},
		"postgres://h/db?password=pw1&user=u":    {"pw1"},
		"host=h password=pw2 user=u":             {"pw2"},
		"host=h password='pw 3' user=u":          {"%27pw%203%27", "%27pw+3%27", "'pw 3'", "pw%203", "pw 3", "pw+3"},
		"postgres://u:p%40ss@h/db":               {"p%2540ss", "p%40ss", "p@ss"},
		"postgresql://u:broken%zz@h:notaport/db": {"broken%25zz", "broken%zz"},
	} {
		require.Equal(t, want, redact.Secrets(connString), connString)
	}
}

// TestSecretsParsedPassword checks that the password pgx finds outside the
// connection string (here PGPASSWORD) is a secret too. Not parallel: it sets
// the environment.
func TestSecretsParsedPassword(t *testing.T) {
	t.Setenv("PGPASSWORD", "env-s3cr3t")
	require.Contains(t, redact.Secrets("host=h user=u"), "env-s3cr3t")
	require.Equal(t, "connect as u: xxxxx", redact.String("connect as u: env-s3cr3t", "host=h user=u"))
}

func TestString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "failed: xxxxx and xxxxx", redact.String("failed: s3cr3t and t0k3n", "host=h password=s3cr3t", "postgres://u:t0k3n@h/db"))
	require.Equal(t, "nothing", redact.String("nothing"))
}

func TestURL(t *testing.T) {
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
		// Keyword/value strings.
		{"host=db password=pw", "host=db password=xxxxx"},
		{"host=db password = pw user=u", "host=db password=xxxxx user=u"},
		{"host=db password= pw user=u", "host=db password=xxxxx user=u"},
		{`host=db password='p w\'s' user=u`, "host=db password=xxxxx user=u"},
		{"host=db password=p w user=u", "host=db password=xxxxx user=u"},
		{"host=db password='pw user=u", "host=db password=xxxxx"},
		{"host=db application_name='a password=pw' user=u", "host=db application_name='a password=xxxxx user=u"},
		{"host=db stray user=u", "host=db xxxxx user=u"},
		{"pw", "xxxxx"},
		{"", ""},
	} {
		require.Equal(t, tc.want, redact.URL(tc.in), "URL(%q)", tc.in)
	}
}
