package instances

import "time"

// health tracks this instance's own heartbeats, to decide whether its view
// of the others can be trusted: their heartbeats being old proves them dead
// only if the control plane could have received them, which is what this
// instance's own heartbeats succeeding for a whole timeout shows.
type health struct {
	timeout time.Duration
	// okSince is when the heartbeats started succeeding without a failure
	// since; zero while they fail.
	okSince time.Time
	// last is when the last heartbeat was tried.
	last time.Time
}

// healthChange is what one heartbeat changed.
type healthChange int

const (
	healthSame healthChange = iota
	healthLost              // the first failure after successes
	healthBack              // the first success after failures
)

// record notes a heartbeat tried at now. A gap of more than a timeout since
// the one before (the process was stopped, or starved) counts as a failure
// first: nothing was heard from this instance meanwhile.
func (h *health) record(ok bool, now time.Time) healthChange {
	wasOK := !h.okSince.IsZero()
	if !h.last.IsZero() && now.Sub(h.last) > h.timeout {
		h.okSince = time.Time{}
	}
	h.last = now
	switch {
	case !ok:
		h.okSince = time.Time{}
		if wasOK {
			return healthLost
		}
	case h.okSince.IsZero():
		h.okSince = now
		if !wasOK {
			return healthBack
		}
	}
	return healthSame
}

// mayRescue reports whether, at now, the heartbeats have succeeded for at
// least a timeout without a failure.
func (h *health) mayRescue(now time.Time) bool {
	return !h.okSince.IsZero() && now.Sub(h.okSince) >= h.timeout
}
