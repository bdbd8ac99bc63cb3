package provisioning

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidateConfig(t *testing.T) {
	t.Parallel()
	const u = "postgres://prov:secret@db1:5432/postgres"
	require.NoError(t, ValidateConfig(Config{URL: u}))
	require.NoError(t, ValidateConfig(Config{URL: u, NameTemplate: "t_{id}_db", TenantURLTemplate: "postgres://app@db1/{database}", Strategy: StrategyFileCopy}))
	for _, cfg := range []Config{
		{},
		{URL: u, NameTemplate: "fixed"},
		{URL: u, NameTemplate: "T-{id}"},
		{URL: u, NameTemplate: strings.Repeat("a", 63) + "{id}"},
		{URL: u, TenantURLTemplate: "postgres://app@db1/fixed"},
		{URL: u, Strategy: "copy"},
		{URL: "postgres://prov:secret@db1:notaport/postgres"},
	} {
		err := ValidateConfig(cfg)
		require.ErrorIs(t, err, ErrInvalid, "%+v", cfg)
		require.NotContains(t, err.Error(), "secret")
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	p, err := New(Config{URL: "postgres://prov:secret@db1:5432/postgres?sslmode=require"})
	require.NoError(t, err)
	defer p.Close()
	name, err := p.DatabaseName("acme-1")
	require.NoError(t, err)
	require.Equal(t, "tenant_acme-1", name)
	u, err := p.TenantURL("acme-1", name)
	require.NoError(t, err)
	require.Equal(t, "postgres://prov:secret@db1:5432/tenant_acme-1?sslmode=require", u)
	_, err = p.DatabaseName(strings.Repeat("x", 60))
	require.ErrorIs(t, err, ErrInvalid)

	u, err = TenantURL(Config{TenantURLTemplate: "postgres://app@db1/{database}?application_name={id}"}, "acme", "tenant_acme")
	require.NoError(t, err)
	require.Equal(t, "postgres://app@db1/tenant_acme?application_name=acme", u)
}
