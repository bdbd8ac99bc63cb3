package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
	"github.com/tenantmigrate/tenantmigrate/internal/provisioning"
)

func TestTenantsAddProvision(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "c" + hex.EncodeToString(b[:])
	// A source of this test's own, so a template of its own.
	require.NoError(t, os.WriteFile(filepath.Join(f.migrations, "00005_unique.sql"), []byte("-- +goose Up\nSELECT '"+prefix+"';\n"), 0o644))
	m, err := migrator.New(migrator.Config{FS: os.DirFS(f.migrations)})
	require.NoError(t, err)
	serverURL := pgtest.ServerURL(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			return
		}
		defer conn.Close(ctx)
		for _, n := range []string{prefix + "_acme", provisioning.TemplateName(m)} {
			_, _ = conn.Exec(ctx, "ALTER DATABASE "+n+" WITH IS_TEMPLATE false")
			_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)")
		}
	})
	exists := func() bool {
		return queryBool(t, serverURL, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = '"+prefix+"_acme')")
	}

	// Bad input: no provision server; a URL with --provision.
	r := f.run("tenants", "add", "acme", "--provision")
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "--provision needs --provision-url or PROVISION_URL")
	r = f.run("tenants", "add", "acme", "postgres://u@h/db", "--provision", "--provision-url", serverURL)
	requireCode(t, 2, r)
	require.Contains(t, r.stderr, "give no TENANT_DATABASE_URL")
	r = f.run("tenants", "add", "acme")
	requireCode(t, 2, r)

	prov := []string{"--provision-url", serverURL, "--provision-name-template", prefix + "_{id}"}
	r = f.run(append([]string{"tenants", "add", "acme", "--provision"}, prov...)...)
	requireCode(t, 0, r)
	require.Contains(t, r.stdout, "provisioned tenant acme")
	require.Regexp(t, `version:\s+5`, r.stdout)
	require.Regexp(t, `status:\s+COMPLETED`, r.stdout)
	require.True(t, exists())

	// rm --drop-database refuses a registered tenant, drops a provisioned one.
	f.add("registered", "postgres://app@db.example.com/registered")
	r = f.run(append([]string{"tenants", "rm", "registered", "--drop-database"}, prov...)...)
	requireCode(t, 1, r)
	require.Contains(t, r.stderr, "not provisioned by tenantmigrate")
	r = f.run(append([]string{"tenants", "rm", "acme", "--drop-database"}, prov...)...)
	requireCode(t, 0, r)
	require.False(t, exists())
	require.Len(t, f.tenants(), 1)
}
