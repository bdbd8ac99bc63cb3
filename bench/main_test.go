package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCommandLineMasksPassword(t *testing.T) {
	t.Parallel()
	require.Equal(t, "go run ./bench -database-url postgres://u:xxxxx@h/postgres -tenants 3",
		commandLine([]string{"-database-url", "postgres://u:s3cr3t@h/postgres", "-tenants", "3"}))
	require.Equal(t, "go run ./bench -database-url host=h password=xxxxx user=u",
		commandLine([]string{"-database-url", "host=h password= s3cr3t user=u"}))
}
