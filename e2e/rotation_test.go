package e2e

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/fleettest"
	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// rotatedKey is the key TestEncryptionKeyRotation rotates to from
// encryptionKey.
const rotatedKey = "e2e-rotated-key-9876543210"

// keyEnv is the environment of a process with key current and previous
// keys (empty: none); later entries win over serveEnv's.
func keyEnv(env []string, current, previous string) []string {
	return append(append([]string{}, env...), "ENCRYPTION_KEY="+current, "PREVIOUS_ENCRYPTION_KEYS="+previous)
}

// keyIDOf is the key id of secret, as the control plane records it.
func keyIDOf(t *testing.T, secret string) string {
	t.Helper()
	c, err := controlplane.NewCipher(secret)
	require.NoError(t, err)
	return c.KeyID()
}

// storedCiphertexts returns every stored database_url.
func storedCiphertexts(t *testing.T, cp *pgxpool.Pool) [][]byte {
	t.Helper()
	rows, err := cp.Query(t.Context(), `SELECT database_url FROM tenantmigrate.tenants`)
	require.NoError(t, err)
	var out [][]byte
	var b []byte
	_, err = pgx.ForEachRow(rows, []any{&b}, func() error {
		out = append(out, bytes.Clone(b))
		return nil
	})
	require.NoError(t, err)
	return out
}

// requireNoKeyMaterial checks that out shows neither key nor any part of a
// stored ciphertext (raw or hex, its first 12 bytes: the nonce).
func requireNoKeyMaterial(t *testing.T, what, out string, ciphertexts [][]byte) {
	t.Helper()
	for _, key := range []string{encryptionKey, rotatedKey} {
		require.NotContains(t, out, key, "%s shows a key", what)
	}
	for _, c := range ciphertexts {
		require.NotContains(t, out, hex.EncodeToString(c[:12]), "%s shows a ciphertext", what)
		require.False(t, strings.Contains(out, string(c[:12])), "%s shows a ciphertext", what)
	}
}

// gatewayGet sends GET / for tenant id and returns the status and body.
func gatewayGet(t *testing.T, s *server, id string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/", nil)
	require.NoError(t, err)
	req.Host = id + ".local.dev"
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// addTenant registers tenant tn through the admin API of s.
func addTenant(t *testing.T, s *server, tn fleettest.SchemaTenant) {
	t.Helper()
	require.Equal(t, http.StatusCreated, s.admin(t, http.MethodPost, "/admin/tenants/"+tn.ID,
		fmt.Sprintf(`{"databaseUrl": %q, "schema": %q}`, tn.URL, tn.Schema), nil))
}

// scheduleFleet asks s to queue every tenant behind.
func scheduleFleet(t *testing.T, s *server) {
	t.Helper()
	require.Equal(t, http.StatusAccepted, s.admin(t, http.MethodPost, "/admin/migrations/fleet", `{}`, nil))
}

// TestEncryptionKeyRotation rotates a fleet's encryption key from A
// (encryptionKey) to B (rotatedKey) with serve processes and the CLI, as an
// operator would:
//
//  1. serve with A alone; tenants registered, some through its admin API.
//  2. serve restarted with B and previous A, and a release with two more
//     versions (version 2 slow) that full_fleet migrates; while it does, and
//     while a gateway load, URL PATCHes and new tenants go on, `rekey` runs
//     with B and previous A. Every row ends under B, the PATCHed URLs are
//     the new ones, every tenant COMPLETED with each version applied once,
//     no request fails.
//  3. serve with B alone and one more version: every tenant migrated (every
//     URL decrypted with B), load served, `rekey --dry-run` finds nothing.
//  4. A alone: `rekey` refuses, naming every tenant id, exit 1; serve starts
//     and fails only those tenants where it needs their URL (admin reads,
//     migrate now), naming them, while a tenant registered under A works.
//     Nothing shows a key or a ciphertext.
func TestEncryptionKeyRotation(t *testing.T) {
	t.Parallel()
	cpURL := pgtest.NewDatabase(t)
	cp := newPool(t, cpURL)
	tenants := registerTenants(t, cpURL, "rk", 2, 20) // under A
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "upstream "+r.Header.Get("X-Tenant-Id"))
	}))
	t.Cleanup(upstream.Close)
	v1 := "CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL);"
	v2 := "SELECT pg_sleep(0.2);\nALTER TABLE accounts ADD COLUMN plan text NOT NULL DEFAULT 'free';"
	v3 := "CREATE TABLE invoices (id bigserial PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts (id));"
	v4 := "CREATE INDEX accounts_name_idx ON accounts (name);"
	base := serveEnv(cpURL, "", "full_fleet", "UPSTREAM_URL="+upstream.URL, "RETRY_BACKOFF=100ms")
	env := func(dir, current, previous string) []string {
		return keyEnv(append(append([]string{}, base...), "MIGRATIONS_DIR="+dir), current, previous)
	}
	cliEnv := func(current, previous string) []string {
		return keyEnv([]string{"DATABASE_URL=" + cpURL}, current, previous)
	}
	idA, idB := keyIDOf(t, encryptionKey), keyIDOf(t, rotatedKey)
	underKey := func(id string) int {
		var n int
		require.NoError(t, cp.QueryRow(t.Context(), `SELECT count(*) FROM tenantmigrate.tenants WHERE key_id = $1`, id).Scan(&n))
		return n
	}

	// 1. Key A alone.
	serveA := startServer(t, "serve-A", env(writeMigrations(t, v1), encryptionKey, ""))
	serveA.waitListening(t)
	more := fleettest.NewSchemaTenants(t, "rk-a", 1, 5, func(tn fleettest.SchemaTenant) { addTenant(t, serveA, tn) })
	tenants = append(tenants, more...)
	scheduleFleet(t, serveA)
	waitAllLatest(t, cp, tenants, 1, 60*time.Second)
	require.Equal(t, len(tenants), underKey(idA))
	require.Zero(t, serveA.stop(t, 30*time.Second))

	// 2. B with previous A, a release migrating the fleet, and rekey.
	serveB := startServer(t, "serve-B+A", env(writeMigrations(t, v1, v2, v3), rotatedKey, encryptionKey))
	serveB.waitListening(t)
	ids := fleettest.IDs(tenants)
	// The load goes on until rekey has finished and the fleet is at 3.
	var rekeyDone atomic.Bool
	var lastCheck time.Time
	registered := ids // the load's tenants; those added meanwhile are not in it
	// loadUntil runs on the load's goroutine: no require in it.
	loadUntil := func() bool {
		if !rekeyDone.Load() || time.Since(lastCheck) < 100*time.Millisecond {
			return false
		}
		lastCheck = time.Now()
		var n int
		err := cp.QueryRow(t.Context(), `SELECT count(*) FROM tenantmigrate.tenants
			WHERE id = ANY($1) AND migrations_status = 'COMPLETED' AND migrations_version = 3`, registered).Scan(&n)
		return err == nil && n == len(registered)
	}
	loadOut := make(chan loadResult, 1)
	go func() {
		loadOut <- runLoad(t, serveB.URL, ids, 100, 32, 90*time.Second, loadUntil)
	}()
	waitFor(t, 60*time.Second, "the fleet run under way", func() bool {
		return fleettest.CountCompleted(t, cp, ids, 3) > 0
	})
	behindAtRekey := len(ids) - fleettest.CountCompleted(t, cp, ids, 3)
	rekey := startCommand(t, "rekey B+A", cliEnv(rotatedKey, encryptionKey), "rekey", "--page-size", "5")

	// While it runs: URL changes and new tenants, both written under B.
	patched := map[string]string{}
	for _, tn := range tenants[:5] {
		u, err := url.Parse(tn.URL)
		require.NoError(t, err)
		q := u.Query()
		q.Set("application_name", "rk-patched")
		u.RawQuery = q.Encode()
		patched[tn.ID] = u.String()
		require.Equal(t, http.StatusOK, serveB.admin(t, http.MethodPatch, "/admin/tenants/"+tn.ID,
			fmt.Sprintf(`{"databaseUrl": %q}`, u.String()), nil))
	}
	added := fleettest.NewSchemaTenants(t, "rk-b", 1, 3, func(tn fleettest.SchemaTenant) { addTenant(t, serveB, tn) })

	require.Zero(t, rekey.wait(t, 60*time.Second), "rekey B+A:\n%s", rekey.out.String())
	rekeyDone.Store(true)
	t.Logf("rekey with %d of %d tenants still behind: %s", behindAtRekey, len(ids), strings.TrimSpace(rekey.out.String()))
	// Each tenant that existed throughout is counted once; those added
	// during the run may be.
	var rekeyed, current, failed int
	_, err := fmt.Sscanf(rekey.out.String(), "%d rekeyed, %d already under the current key, %d failed", &rekeyed, &current, &failed)
	require.NoError(t, err, rekey.out.String())
	require.Zero(t, failed)
	require.Positive(t, rekeyed)
	require.GreaterOrEqual(t, rekeyed+current, len(ids))
	require.LessOrEqual(t, rekeyed+current, len(ids)+len(added))
	scheduleFleet(t, serveB) // the new tenants, and the PATCHed ones the load did not reach
	load := <-loadOut
	t.Logf("gateway load during the rotation and the fleet run: %s", load)
	require.Empty(t, load.failed, "failed requests during the rotation")
	require.NotEmpty(t, load.latencies)

	tenants = append(tenants, added...)
	ids = fleettest.IDs(tenants)
	waitAllLatest(t, cp, tenants, 3, 90*time.Second)
	require.Equal(t, len(tenants), underKey(idB), "every row under B")
	for id, want := range patched {
		var got struct {
			DatabaseURL string `json:"databaseUrl"`
		}
		require.Equal(t, http.StatusOK, serveB.admin(t, http.MethodGet, "/admin/tenants/"+id, "", &got))
		require.Equal(t, want, got.DatabaseURL, "the concurrent PATCH of %s won", id)
	}
	fleettest.RequireAppliedOnce(t, tenants, 1, 2, 3)
	requireNoKeyMaterial(t, "rekey", rekey.out.String(), storedCiphertexts(t, cp))
	require.Zero(t, serveB.stop(t, 30*time.Second))

	// 3. B alone: a release every tenant is migrated to, under load.
	onlyB := startServer(t, "serve-B", env(writeMigrations(t, v1, v2, v3, v4), rotatedKey, ""))
	onlyB.waitListening(t)
	var migratedB bool
	loadB := runLoad(t, onlyB.URL, ids, 100, 32, 60*time.Second, func() bool {
		migratedB = migratedB || fleettest.CountCompleted(t, cp, ids, 4) == len(ids)
		return migratedB
	})
	waitAllLatest(t, cp, tenants, 4, 30*time.Second)
	t.Logf("B alone, the fleet to version 4: %s", loadB)
	require.Empty(t, loadB.failed)
	dry := startCommand(t, "rekey --dry-run B", cliEnv(rotatedKey, ""), "rekey", "--dry-run")
	require.Zero(t, dry.wait(t, 30*time.Second), dry.out.String())
	require.Contains(t, dry.out.String(), fmt.Sprintf("dry run: 0 to rekey, %d already under the current key, 0 failed", len(ids)))
	require.Zero(t, onlyB.stop(t, 30*time.Second))

	// 4. A alone.
	ciphertexts := storedCiphertexts(t, cp)
	refused := startCommand(t, "rekey A", cliEnv(encryptionKey, ""), "rekey")
	require.Equal(t, 1, refused.wait(t, 30*time.Second), refused.out.String())
	out := refused.out.String()
	for _, id := range ids {
		require.Contains(t, out, "failed: tenant "+id+": cannot decrypt tenant database URL: it is under the key with id "+idB+", which is not configured")
	}
	require.Contains(t, out, fmt.Sprintf("0 rekeyed, 0 already under the current key, %d failed", len(ids)))
	require.Contains(t, out, fmt.Sprintf("%d tenants could not be rekeyed: %s", len(ids), strings.Join(ids[:20], ", ")))
	requireNoKeyMaterial(t, "rekey with A alone", out, ciphertexts)
	require.Equal(t, len(ids), underKey(idB), "a refused rekey wrote")

	serveOld := startServer(t, "serve-A-again", env(writeMigrations(t, v1, v2, v3, v4), encryptionKey, ""))
	serveOld.waitListening(t)
	require.Equal(t, http.StatusOK, serveOld.health(t))
	victim := tenants[0].ID
	status, body := gatewayGet(t, serveOld, victim)
	require.Equal(t, http.StatusOK, status, "a tenant at the latest version needs no URL: %s", body)
	var errBody struct {
		Error string `json:"error"`
	}
	require.Equal(t, http.StatusInternalServerError, serveOld.admin(t, http.MethodGet, "/admin/tenants/"+victim, "", &errBody))
	require.Contains(t, errBody.Error, "tenant "+victim+": cannot decrypt tenant database URL")
	var migrated struct {
		Migrated bool   `json:"migrated"`
		Error    string `json:"error"`
	}
	require.Equal(t, http.StatusInternalServerError, serveOld.admin(t, http.MethodPost, "/admin/tenants/"+victim+"/migrations", "", &migrated))
	require.False(t, migrated.Migrated)
	require.Contains(t, migrated.Error, victim)
	// A tenant registered under A is migrated and served: only the others fail.
	fresh := fleettest.NewSchemaTenants(t, "rk-c", 1, 1, func(tn fleettest.SchemaTenant) { addTenant(t, serveOld, tn) })
	status, body = gatewayGet(t, serveOld, fresh[0].ID)
	require.Equal(t, http.StatusOK, status, body)
	require.Equal(t, "upstream "+fresh[0].ID, body)
	require.True(t, serveOld.alive())
	require.Zero(t, serveOld.stop(t, 30*time.Second))
	for _, s := range []*server{serveA, serveB, onlyB, serveOld} {
		requireNoKeyMaterial(t, "the logs of "+s.name, s.logs.String(), ciphertexts)
	}
}
