package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tenantmigrate/tenantmigrate"
)

// TestPrintSummary: the summary counts, the retried and removed tenants,
// and the failures without their "migrate tenant ID" prefix. The runs
// themselves are Orchestrator.MigrateTenants' (the root package's tests);
// migrate_test.go runs the command end to end.
func TestPrintSummary(t *testing.T) {
	t.Parallel()
	errPermanent := errors.New("syntax error")
	res := fleetResult{
		MigrateResult: tenantmigrate.MigrateResult{Selected: 25, Completed: 22, Failed: 2, Removed: 1, Retried: 3, Duration: 2 * time.Second},
		failures: []tenantFailure{
			{id: "t-03", err: &tenantmigrate.MigrationError{TenantID: "t-03", Err: errPermanent}},
			{id: "t-07", err: &tenantmigrate.MigrationError{TenantID: "t-07", Err: errPermanent}},
		},
	}
	require.False(t, res.ok())
	var summary bytes.Buffer
	printSummary(&summary, res, 4)
	require.Contains(t, summary.String(), "ran 24 tenants toward version 4 in 2s (12.0 tenants/s): 22 completed, 2 failed, 3 needed a retry, 1 removed from the control plane meanwhile\n")
	require.Contains(t, summary.String(), "failed tenants:\n  t-03: syntax error\n  t-07: syntax error\n")
	require.ErrorContains(t, resultErr(res), "2 of 24 tenants failed")

	// More failures than shown; an interrupted run.
	res.Failed = 12
	res.Interrupted = true
	summary.Reset()
	printSummary(&summary, res, 4)
	require.Contains(t, summary.String(), "interrupted: the tenants not started yet were left as they are\n")
	require.Contains(t, summary.String(), "failed tenants (first 2 of 12; all of them: tenantmigrate status):\n")

	ok := fleetResult{MigrateResult: tenantmigrate.MigrateResult{Selected: 3, Completed: 3, Duration: time.Second}}
	require.True(t, ok.ok())
	require.NoError(t, resultErr(ok))
	ok.Interrupted = true
	require.ErrorContains(t, resultErr(ok), "interrupted")
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
