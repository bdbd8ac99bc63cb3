package tenantmigrate_test

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
)

// TestNewErrorsNeverContainPassword opens an Orchestrator on control-plane
// database URLs that do not parse or do not connect: New's error shows
// none of the password. The keyword/value cases with a space after '='
// showed it through pgx's own masking.
func TestNewErrorsNeverContainPassword(t *testing.T) {
	t.Parallel()
	const password = "S3cret-Passw0rd"
	for name, dbURL := range map[string]string{
		"KeywordValueSpaceAfterEquals":  "host=127.0.0.1 port=x password= " + password + " user=u",
		"KeywordValueSpacesAroundEqual": "host=127.0.0.1 port=x password = " + password + " user=u",
		"KeywordValueEscapedQuote":      `host=127.0.0.1 port=x password='it\'s ` + password + `' user=u`,
		"KeywordValueUnquotedSpace":     "host=127.0.0.1 password=it " + password + " user=u",
		"KeywordValueUnreachable":       "host=127.0.0.1 port=1 password= " + password + " user=u connect_timeout=5",
		"URLBadPort":                    "postgres://u:" + password + "@127.0.0.1:x/db",
		"URLUnencodedSlash":             "postgres://u:pa/" + password + "@127.0.0.1:x/db",
		"URLQuery":                      "postgres://u@127.0.0.1:x/db?password=" + password,
		"URLUnreachable":                "postgres://u:" + password + "@127.0.0.1:1/db?connect_timeout=5",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := tenantmigrate.New(t.Context(), tenantmigrate.Config{DatabaseURL: dbURL, Migrations: fleetMigrations()})
			require.Error(t, err)
			require.NotContains(t, err.Error(), password)
			if _, parseErr := pgconn.ParseConfig(dbURL); parseErr != nil {
				require.ErrorContains(t, err, "parse control-plane database URL")
				var pce *pgconn.ParseConfigError
				require.ErrorAs(t, err, &pce, "the chain survives")
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	require.Equal(t, "postgres://u:xxxxx@db/x", tenantmigrate.RedactURL("postgres://u:pw@db/x"))
	require.Equal(t, "host=db password=xxxxx user=u", tenantmigrate.RedactURL("host=db password= pw user=u"))
}
