package queue

import (
	"context"
	"sync"

	"github.com/riverqueue/river"
)

// afterSnooze runs WaitError.AfterSnooze once River has recorded the
// snooze it asked for.
//
// River records a job's snooze after Work returns, in its completer's next
// batch: within 50 ms under load, up to 250 ms when it is idle (River
// v0.51.2, internal/jobcompleter). Until then the job is still running in
// the control plane, so whatever looks for waiting jobs meanwhile (a
// released slot of its server waking the oldest) does not see it, and the
// snooze, once recorded, lasts its whole delay. AfterSnooze runs after
// that window, on River's job_snoozed event, which River sends once the
// batch is committed: anything that happened during the window is seen
// then.
type afterSnooze struct {
	mu      sync.Mutex
	pending map[int64]func(context.Context) // job id -> WaitError.AfterSnooze
}

// add registers f for the snooze of job id that Work is returning.
func (a *afterSnooze) add(id int64, f func(context.Context)) {
	if a == nil || f == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending == nil {
		a.pending = map[int64]func(context.Context){}
	}
	a.pending[id] = f
}

func (a *afterSnooze) take(id int64) func(context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.pending[id]
	delete(a.pending, id)
	return f
}

// reset forgets every registration: after Stop no event comes for them.
func (a *afterSnooze) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending = nil
}

// run calls the registered functions as River reports the snoozes
// recorded, one at a time, until ctx ends or the subscription closes. An
// event River dropped (a full subscription channel) leaves its function
// registered until the job snoozes again or the queue stops; the job then
// waits its snooze's delay, as it would without this.
func (a *afterSnooze) run(ctx context.Context, events <-chan *river.Event) {
	for {
		select {
		case <-ctx.Done():
			return
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
