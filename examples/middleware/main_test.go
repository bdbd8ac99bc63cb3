package main

import (
	"context"
	"io"
	"io/fs"
	"net"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

func TestExampleMigratesOnFirstRequest(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cpURL := pgtest.NewDatabase(t)
	tenantURL := pgtest.NewDatabase(t)
	migrationsFS, err := fs.Sub(migrations, "migrations")
	require.NoError(t, err)
	cfg := tenantmigrate.Config{DatabaseURL: cpURL, EncryptionKey: "example-test-key-0123456789", Migrations: migrationsFS}

	// Register the tenant with a second, read-only Orchestrator, as an
	// operator would with tenantmigrate tenants add.
	adminCfg := cfg
	adminCfg.ReadOnly = true
	admin, err := tenantmigrate.New(ctx, adminCfg)
	require.NoError(t, err)
	_, err = admin.CreateTenant(ctx, tenantmigrate.Tenant{ID: "acme", DatabaseURL: tenantURL})
	require.NoError(t, err)
	admin.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, ln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	require.NoError(t, err)
	req.Host = "acme.local.dev"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, string(body), "hello, tenant acme")

	// The tenant database now holds the service's schema.
	conn, err := pgx.Connect(ctx, tenantURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM goose_db_version WHERE version_id > 0").Scan(&n))
	require.Equal(t, 1, n)
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n))

	// A host that names no tenant is refused.
	req.Host = "example.com"
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}
