package queue

import (
	"context"
	"sync"
	"time"

	"github.com/riverqueue/river"
)

// afterSnooze runs WaitError.AfterSnooze once River has recorded the
// snooze it asked for.
//
// River records a job's snooze after Work returns, in its completer's next
// batch: every 250 ms, or 50 ms once 100 job results wait (River v0.51.2,
// internal/jobcompleter). Until then the job is still running in
// the control plane, so whatever looks for waiting jobs meanwhile (a
// released slot of its server waking the oldest) does not see it, and the
// snooze, once recorded, lasts its whole delay. AfterSnooze runs after
// that window, on River's job_snoozed event, which River sends once the
// batch is committed: anything that happened during the window is seen
// then.
type afterSnooze struct {
	mu      sync.Mutex
	pending map[int64]pendingAfter // by job id
}

type pendingAfter struct {
	f     func(context.Context) // WaitError.AfterSnooze
	added time.Time
}

// afterSnoozeExpiry is how long a registration waits for its event: one
// River dropped (a full subscription channel) is forgotten after it, and
// its job waits its snooze's delay, as it would without AfterSnooze.
const afterSnoozeExpiry = time.Minute

// add registers f for the snooze of job id that Work is returning.
func (a *afterSnooze) add(id int64, f func(context.Context)) {
	if a == nil || f == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		a.pending = map[int64]pendingAfter{}
	}
	a.pending[id] = pendingAfter{f: f, added: time.Now()}
}

func (a *afterSnooze) take(id int64) func(context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pending[id]
	delete(a.pending, id)
	return p.f
}

// expire forgets the registrations older than afterSnoozeExpiry.
func (a *afterSnooze) expire(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, p := range a.pending {
		if now.Sub(p.added) > afterSnoozeExpiry {
			delete(a.pending, id)
		}
	}
}

// reset forgets every registration: after Stop no event comes for them.
func (a *afterSnooze) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending = nil
}

// run calls the registered functions as River reports the snoozes
// recorded, one at a time, until ctx ends or the subscription closes, and
// forgets those whose event never came (afterSnoozeExpiry).
func (a *afterSnooze) run(ctx context.Context, events <-chan *river.Event) {
	t := time.NewTicker(afterSnoozeExpiry / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			a.expire(now)
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev == nil || ev.Job == nil {
				continue
			}
			if f := a.take(ev.Job.ID); f != nil {
				f(ctx)
			}
		}
	}
}
