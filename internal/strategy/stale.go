package strategy

import (
	"sync"
	"time"
)

// DefaultStaleRetryInterval is the StaleLimiter's default interval.
const DefaultStaleRetryInterval = 5 * time.Minute

// StaleLimiter rations background retries of FAILED_STALE tenants that
// requests keep hitting: at most one attempt at a time per tenant, and at
// most one attempt started per interval. Memory is bounded by the tenants
// attempted within the last two intervals plus those still running: older
// entries are forgotten.
type StaleLimiter struct {
	interval time.Duration
	now      func() time.Time

	mu        sync.Mutex
	entries   map[string]staleEntry
	lastSweep time.Time
}

type staleEntry struct {
	started time.Time // when the last attempt was acquired
	running bool      // acquired and not yet released
}

// NewStaleLimiter returns a StaleLimiter allowing one attempt per tenant per
// interval. A zero or negative interval means DefaultStaleRetryInterval.
func NewStaleLimiter(interval time.Duration) *StaleLimiter {
	if interval <= 0 {
		interval = DefaultStaleRetryInterval
	}
	return &StaleLimiter{
		interval: interval,
		now:      time.Now,
		entries:  make(map[string]staleEntry),
	}
}

// TryAcquire reports whether the caller may start a background attempt for
// tenantID now: no attempt for it is running and none started within the
// interval. When it returns true the caller must call Release when the
// attempt ends.
func (l *StaleLimiter) TryAcquire(tenantID string) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	if e, ok := l.entries[tenantID]; ok && (e.running || now.Sub(e.started) < l.interval) {
		return false
	}
	l.entries[tenantID] = staleEntry{started: now, running: true}
	return true
}

// Release ends the attempt acquired for tenantID. The tenant stays rationed
// until the interval since TryAcquire has passed.
func (l *StaleLimiter) Release(tenantID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[tenantID]; ok {
		e.running = false
		l.entries[tenantID] = e
	}
}

// sweep forgets finished attempts older than the interval, at most once per
// interval, so the cost is amortised over the calls in between.
func (l *StaleLimiter) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.interval {
		return
	}
	l.lastSweep = now
	for id, e := range l.entries {
		if !e.running && now.Sub(e.started) >= l.interval {
			delete(l.entries, id)
		}
	}
}
