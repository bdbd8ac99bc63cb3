package pgtest

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDatabaseName(t *testing.T) {
	t.Parallel()
	for _, testName := range []string{
		"TestX",
		"TestFoo/sub_case#01",
		"Test/" + strings.Repeat("Ab-", 40),
		"Ünïcode/ name",
		"__",
	} {
		a, b := databaseName(testName), databaseName(testName)
		require.NotEqual(t, a, b, "names must be unique")
		require.LessOrEqual(t, len(a), maxIdentifierLen, a)
		require.Regexp(t, `^t_([a-z0-9]+_)*[0-9a-f]{12}$`, a)
	}
	require.Regexp(t, `^t_testfoo_sub_case_01_[0-9a-f]{12}$`, databaseName("TestFoo/sub_case#01"))
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	got, err := withDatabase("postgres://u:p@127.0.0.1:5432/postgres?sslmode=disable", "t_x_1")
	require.NoError(t, err)
	require.Equal(t, "postgres://u:p@127.0.0.1:5432/t_x_1?sslmode=disable", got)

	got, err = withDatabase("postgresql://u@h", "t_x_1")
	require.NoError(t, err)
	require.Equal(t, "postgresql://u@h/t_x_1", got)

	got, err = withDatabase("host=h user=u dbname=postgres", "t_x_1")
	require.NoError(t, err)
	require.Equal(t, "host=h user=u dbname=postgres dbname=t_x_1", got)
}
