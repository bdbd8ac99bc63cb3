package provisioning

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate/internal/pgtest"
)

// TestDropOfGoneDatabaseNeedsOneConnection: Drop of a database that is
// already gone (a deprovision repeated after a half-way failure) checks the
// token's server while its name lock holds a connection of the pool. With
// every connection of the pool held that way (pool_max_conns Drops of gone
// databases at once; here pool_max_conns=1 and one Drop), it waits for a
// connection that only it would release: it hangs until its context ends.
func TestDropOfGoneDatabaseNeedsOneConnection(t *testing.T) {
	t.Parallel()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	prefix := "g" + hex.EncodeToString(b)
	u := pgtest.ServerURL(t)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	p, err := New(Config{URL: u + sep + "pool_max_conns=1", NameTemplate: prefix + "_{id}"})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	here, err := p.serverID(t.Context())
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = p.Drop(ctx, "x", prefix+"_x", here+"-0123456789abcdef")
	require.NoError(t, err, "Drop of a gone database after %s", time.Since(start))
}

// The same with the default pool: as many Drops of gone databases at once as
// the pool has connections.
func TestConcurrentDropsOfGoneDatabases(t *testing.T) {
	t.Parallel()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	prefix := "h" + hex.EncodeToString(b)
	p, err := New(Config{URL: pgtest.ServerURL(t), NameTemplate: prefix + "_{id}"})
	require.NoError(t, err)
	t.Cleanup(p.Close)
	here, err := p.serverID(t.Context())
	require.NoError(t, err)
	n := int(p.pool.Config().MaxConns) * 4
	for round := range 20 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				errs[i] = p.Drop(ctx, "x", prefix+"_x"+string(rune('a'+i%26))+hex.EncodeToString([]byte{byte(i)}), here+"-0123456789abcdef")
			})
		}
		wg.Wait()
		cancel()
		for i, err := range errs {
			require.NoError(t, err, "round %d drop %d", round, i)
		}
	}
}
