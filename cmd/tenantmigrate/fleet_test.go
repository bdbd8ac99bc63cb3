package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/migrator"
)

// flaky fails each tenant with err its first failures times.
type flaky struct {
	mu       sync.Mutex
	calls    map[string]int
	failures int
	err      error
}

func (f *flaky) migrate(_ context.Context, id string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[id]++
	if f.calls[id] <= f.failures {
		return 0, &tenantmigrate.MigrationError{TenantID: id, Err: f.err}
	}
	return 4, nil
}

var (
	errTransient = fmt.Errorf("wait for lock: %w", migrator.ErrLockTimeout)
	errPermanent = errors.New("syntax error")
)

func TestMigrateWithRetry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		failures     int
		err          error
		retries      int
		wantAttempts int
		wantErr      bool
	}{
		{"FirstTime", 0, nil, 2, 1, false},
		{"TransientRecovers", 2, errTransient, 2, 3, false},
		{"TransientPersists", 3, errTransient, 2, 3, true},
		{"NoRetries", 1, errTransient, 0, 1, true},
		{"Permanent", 1, errPermanent, 2, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &flaky{failures: tc.failures, err: tc.err}
			_, attempts, err := migrateWithRetry(t.Context(), f.migrate, "acme", tc.retries, time.Millisecond)
			require.Equal(t, tc.wantAttempts, attempts)
			require.Equal(t, tc.wantAttempts, f.calls["acme"])
			if tc.wantErr {
				require.ErrorIs(t, err, tc.err)
			} else {
				require.NoError(t, err)
			}
		})
	}

	// A cancelled run does not wait for a retry.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f := &flaky{failures: 5, err: errTransient}
	_, attempts, err := migrateWithRetry(ctx, f.migrate, "acme", 3, time.Hour)
	require.Equal(t, 1, attempts)
	require.ErrorIs(t, err, migrator.ErrLockTimeout)
}

func TestRunFleet(t *testing.T) {
	t.Parallel()
	ids := make([]string, 25)
	for i := range ids {
		ids[i] = fmt.Sprintf("t-%02d", i)
	}
	each := func(_ context.Context, fn func(string) error) error {
		for _, id := range ids {
			if err := fn(id); err != nil {
				return err
			}
		}
		return nil
	}
	// The first three tenants wait until all three run at once: the
	// workers run concurrently, and never more than three.
	var (
		mu            sync.Mutex
		running, peak int
		allIn         = make(chan struct{})
	)
	migrate := func(_ context.Context, id string) (int64, error) {
		mu.Lock()
		running++
		peak = max(peak, running)
		if running == 3 {
			select {
			case <-allIn:
			default:
				close(allIn)
			}
		}
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			mu.Unlock()
		}()
		if id <= "t-02" {
			select {
			case <-allIn:
			case <-time.After(30 * time.Second):
				return 0, errors.New("the workers did not run at the same time")
			}
		}
		switch id {
		case "t-03", "t-07":
			return 0, &tenantmigrate.MigrationError{TenantID: id, Err: errPermanent}
		case "t-05":
			return 0, tenantmigrate.ErrTenantNotFound
		}
		return 4, nil
	}

	var out bytes.Buffer
	prog := newProgress(&out, progressNone, time.Hour)
	prog.Start(int64(len(ids)))
	res := runFleet(t.Context(), each, migrate, fleetOpts{concurrency: 3}, prog)
	prog.Stop()
	require.Equal(t, int64(25), res.selected)
	require.Equal(t, int64(22), res.completed)
	require.Equal(t, int64(2), res.failed)
	require.Equal(t, int64(1), res.removed)
	require.False(t, res.ok())
	require.Equal(t, 3, peak)
	require.Len(t, res.failures, 2)

	var summary bytes.Buffer
	printSummary(&summary, res, 4)
	require.Contains(t, summary.String(), "22 completed, 2 failed, 1 removed from the control plane meanwhile")
	require.Contains(t, summary.String(), "  t-03: syntax error\n")
	require.Contains(t, summary.String(), "  t-07: syntax error\n")
}

// TestRunFleetCancel: after ctx ends no tenant is started, and the run says
// it was interrupted.
func TestRunFleetCancel(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	each := func(ctx context.Context, fn func(string) error) error {
		for i := 0; ; i++ {
			if err := fn(fmt.Sprintf("t-%d", i)); err != nil {
				return err
			}
		}
	}
	var started int
	migrate := func(_ context.Context, id string) (int64, error) {
		started++ // one worker: no race
		if started == 3 {
			cancel()
		}
		return 4, nil
	}
	prog := newProgress(&bytes.Buffer{}, progressNone, time.Hour)
	res := runFleet(ctx, each, migrate, fleetOpts{concurrency: 1}, prog)
	require.True(t, res.interrupted)
	require.False(t, res.ok())
	require.LessOrEqual(t, started, 4)
	require.Equal(t, int64(started), res.completed)
	require.Error(t, resultErr(res))
}

// fakeClock is a clock and ticker the test drives.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	ticks chan time.Time
}

func newFakeClock(p *progress) *fakeClock {
	c := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), ticks: make(chan time.Time)}
	p.newTicker = func(time.Duration) (<-chan time.Time, func()) { return c.ticks, func() {} }
	p.now = func() time.Time {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.now
	}
	return c
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) tick() { c.ticks <- time.Time{} }

func TestProgressPlain(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	p := newProgress(&out, progressAuto, time.Second) // a buffer is no terminal
	require.Equal(t, progressPlain, p.mode)
	clock := newFakeClock(p)
	lines := func() []string { return strings.Split(strings.TrimSpace(out.String()), "\n") }

	p.Start(10)
	require.Empty(t, out.String(), "nothing before the first tick")
	clock.tick()
	require.Eventually(t, func() bool { return len(lines()) == 1 && lines()[0] != "" }, 10*time.Second, time.Millisecond)
	for range 4 {
		p.Done(false)
	}
	p.Done(true)
	clock.advance(2 * time.Second)
	clock.tick()
	require.Eventually(t, func() bool { return len(lines()) == 2 }, 10*time.Second, time.Millisecond)
	p.Stop()
	p.Stop()

	require.Equal(t, []string{
		"progress: 0/10 done, 0 failed, 0.0 tenants/s, elapsed 0s, ETA ?",
		"progress: 5/10 done, 1 failed, 2.5 tenants/s, elapsed 2s, ETA 2s",
	}, lines())
}

func TestProgressBar(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	p := newProgress(&out, progressBar, time.Second)
	clock := newFakeClock(p) // never ticks: Start, Write and Stop draw

	p.Start(4)
	require.Equal(t, "\r\x1b[K["+strings.Repeat(".", 20)+"] 0/4   0%  failed 0  0.0/s  ETA ?", out.String())
	p.Done(false)
	clock.advance(time.Second)

	// A log line erases the bar, and the bar comes back under it.
	out.Reset()
	fmt.Fprintln(p, `{"level":"ERROR"}`)
	require.Equal(t, "\r\x1b[K{\"level\":\"ERROR\"}\n\r\x1b[K[#####"+strings.Repeat(".", 15)+"] 1/4  25%  failed 0  1.0/s  ETA 3s", out.String())

	p.Done(false)
	p.Done(true)
	p.Done(false)
	out.Reset()
	p.Stop()
	require.Equal(t, "\r\x1b[K["+strings.Repeat("#", 20)+"] 4/4 100%  failed 1  4.0/s  ETA 0s\n", out.String())
}

func TestJoinVersions(t *testing.T) {
	t.Parallel()
	require.Equal(t, "1, 2, 3", joinVersions([]int64{1, 2, 3}))
	long := make([]int64, 20)
	for i := range long {
		long[i] = int64(i + 1)
	}
	require.Equal(t, "1, 2, 3, 4, 5, ... (10 more), 16, 17, 18, 19, 20", joinVersions(long))
}
