package pgserver

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHighestVersionBinDir(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	makeBin := func(version string, programs ...string) {
		dir := filepath.Join(root, version, "bin")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for _, p := range programs {
			require.NoError(t, os.WriteFile(filepath.Join(dir, p), nil, 0o755))
		}
	}
	all := []string{"initdb", "pg_ctl", "postgres"}

	require.Empty(t, highestVersionBinDir(root))
	makeBin("9.6", all...)
	makeBin("15", all...)
	makeBin("16", "initdb", "pg_ctl") // client-only install: no postgres
	makeBin("notaversion", all...)
	require.Equal(t, filepath.Join(root, "15", "bin"), highestVersionBinDir(root))
	makeBin("100", all...)
	require.Equal(t, filepath.Join(root, "100", "bin"), highestVersionBinDir(root))
	require.Empty(t, highestVersionBinDir(filepath.Join(root, "missing")))
}
