package fleettest

import (
	"testing"
	"time"
)

// Poll checks cond, then again after each interval of every, until it
// holds, failing the test with tb.Fatalf after timeout. cond runs on the calling goroutine, so it may use
// require when that is the test's goroutine.
func Poll(tb testing.TB, every, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-tick.C
	}
}
