package strategy

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestLimiter(interval time.Duration) (*StaleLimiter, *fakeClock) {
	clock := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewStaleLimiter(interval)
	l.now = clock.now
	return l, clock
}

func TestStaleLimiterOnePerTenantPerInterval(t *testing.T) {
	t.Parallel()
	l, clock := newTestLimiter(5 * time.Minute)

	require.True(t, l.TryAcquire("a"))
	require.False(t, l.TryAcquire("a"), "an attempt is running")
	require.True(t, l.TryAcquire("b"), "tenants are independent")

	l.Release("a")
	require.False(t, l.TryAcquire("a"), "released, but the interval has not passed")

	clock.advance(5*time.Minute - time.Second)
	require.False(t, l.TryAcquire("a"))
	clock.advance(time.Second)
	require.True(t, l.TryAcquire("a"), "interval passed")

	// b never released: still running, however long it takes.
	clock.advance(time.Hour)
	require.False(t, l.TryAcquire("b"))
	l.Release("b")
	require.True(t, l.TryAcquire("b"))

	l.Release("never-acquired") // no-op
}

func TestStaleLimiterForgetsOldEntries(t *testing.T) {
	t.Parallel()
	l, clock := newTestLimiter(time.Minute)
	for i := range 1000 {
		id := fmt.Sprintf("t%d", i)
		require.True(t, l.TryAcquire(id))
		l.Release(id)
	}
	require.True(t, l.TryAcquire("running"))
	require.Len(t, l.entries, 1001)

	clock.advance(time.Minute)
	require.True(t, l.TryAcquire("new"))
	require.Len(t, l.entries, 2, "finished entries older than the interval are dropped; running ones kept")
	require.False(t, l.TryAcquire("running"))
}

func TestStaleLimiterDefaultInterval(t *testing.T) {
	t.Parallel()
	require.Equal(t, DefaultStaleRetryInterval, NewStaleLimiter(0).interval)
	require.Equal(t, DefaultStaleRetryInterval, NewStaleLimiter(-time.Second).interval)
}

func TestStaleLimiterConcurrent(t *testing.T) {
	t.Parallel()
	l := NewStaleLimiter(time.Hour)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		acquired int
	)
	for range 50 {
		wg.Go(func() {
			if l.TryAcquire("x") {
				mu.Lock()
				acquired++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, acquired)
}
