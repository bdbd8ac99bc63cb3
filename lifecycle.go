package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
	"github.com/tenantmigrate/tenantmigrate/internal/queue"
)

// errShutdown is the cause with which Stop cancels the Orchestrator's own
// runs (inline and background) still going at its deadline.
var errShutdown = errors.New("migration interrupted by shutdown")

// hardStopTimeout bounds the wait for runs cancelled at Stop's deadline to
// roll back and return.
const hardStopTimeout = 10 * time.Second

// Start runs the Orchestrator's background parts: the control-plane listener
// that keeps the up-to-date cache correct across instances, the pruner of the
// run history (unless ReadOnly) and, depending on the strategy, the queue workers (Config.RunWorkers), the fleet scan
// (full_fleet) and the progressive collector. Call Stop to end them.
//
// The parts run under a context detached from ctx: cancelling ctx (a signal,
// say) ends none of them, so that Stop can let running migrations finish.
// Start on a running Orchestrator does nothing. If a part fails to start,
// the parts already started are stopped again and Start returns the error;
// Start may then be called again.
func (o *Orchestrator) Start(ctx context.Context) error {
	o.life.Lock()
	defer o.life.Unlock()
	if o.running {
		return nil
	}
	// The heartbeat first: the queue's jobs run under the instance id it
	// registers (see instances.go).
	if err := o.holdHeartbeat(ctx); err != nil {
		return fmt.Errorf("start instance heartbeat: %w", err)
	}
	stopListener := o.startListener(ctx)
	if o.worksQueue() {
		if err := o.queue.Start(ctx); err != nil {
			stopListener()
			o.releaseHeartbeatAfterFailedStart(ctx)
			return fmt.Errorf("start queue: %w", err)
		}
	}
	if o.cfg.Strategy == StrategyProgressive {
		if err := o.collector.Start(ctx); err != nil {
			if o.worksQueue() {
				stopCtx, cancel := cleanupCtx(ctx)
				if qerr := o.queue.Stop(stopCtx); qerr != nil {
					o.logger.Error("stop queue after a failed start", "err", qerr)
				}
				cancel()
			}
			stopListener()
			o.releaseHeartbeatAfterFailedStart(ctx)
			return fmt.Errorf("start progressive collector: %w", err)
		}
	}
	if !o.cfg.ReadOnly {
		o.servers.Start(ctx) // probes DOWN servers
	}
	if o.worksQueue() {
		_ = o.feeder.Start(ctx) // never fails
	}
	o.stopListener = stopListener
	o.startPruner(ctx) // cannot fail
	o.runs.acceptBackground(true)
	o.running = true
	return nil
}

// worksQueue reports whether Start runs queue workers.
func (o *Orchestrator) worksQueue() bool {
	return o.cfg.RunWorkers && o.cfg.Strategy != StrategyOnRequest
}

// startListener runs the control-plane listener until the returned func is
// called; that func waits for it to end.
func (o *Orchestrator) startListener(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer o.cache.live.Store(false)
		// ListenWith gives up only when its first connect fails (it
		// reconnects by itself after that); a control plane that refuses
		// connections just as Start runs must not leave this instance deaf
		// to other instances' changes and pins for its whole life.
		for try, backoff := 1, 100*time.Millisecond; ; try, backoff = try+1, min(2*backoff, 10*time.Second) {
			err := o.store.ListenWith(ctx, controlplane.Listener{
				OnChange: o.cache.drop,
				OnReset: func() {
					o.loadTarget(ctx) // it may have changed unheard
					o.cache.reset()
					o.cache.live.Store(true)
				},
				OnLost: func() {
					// Changes go unheard until the listener is back: serve nothing
					// from the cache meanwhile (see latestCache.has).
					o.cache.live.Store(false)
				},
				OnTarget: func() { o.loadTarget(ctx) },
			})
			o.cache.live.Store(false)
			if err == nil || ctx.Err() != nil {
				return
			}
			// The first failure at ERROR, the retries at WARN: an outage at
			// start-up logs a line every 10 s, not an ERROR each.
			level := slog.LevelWarn
			if try == 1 {
				level = slog.LevelError
			}
			o.logger.Log(ctx, level, "control-plane listener could not connect; retrying", "err", err, "retry_in", backoff, "try", try)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// Stop ends background work gracefully and waits for it, until ctx ends.
// Side by side: the progressive collector queues the tenants it holds, the
// queue stops fetching jobs and lets running ones finish, and migrations run
// inline (during requests, MigrateTenant) or in the background finish. Then
// the collector queues what requests added meanwhile (its flushes have their
// own timeout, so they happen even after ctx ended) and the listener closes.
// Finished migrations are recorded as usual. Requests may keep coming while
// Stop runs: their inline migrations are waited for too.
//
// When ctx ends first, the migrations still running are cancelled (with the
// cause errShutdown, or queue.ErrShutdown for jobs) and roll back. Nothing
// is recorded for their tenants, which keep the state they had; a queued
// job goes back to the queue, available at once, without using an attempt.
// Stop waits up to 10 more seconds for them to return, then returns an
// error wrapping ctx's.
//
// Stop is safe to call more than once, concurrently, and before Start (it
// then waits for inline runs only). It holds no lock that the work it waits
// for takes. A stopped Orchestrator may be started again.
func (o *Orchestrator) Stop(ctx context.Context) error {
	o.life.Lock()
	defer o.life.Unlock()
	o.runs.acceptBackground(false)

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	report := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	// The parts drain side by side, each until ctx ends.
	if o.running && o.cfg.Strategy == StrategyProgressive {
		wg.Go(func() {
			if err := o.collector.Stop(ctx); err != nil {
				report(fmt.Errorf("flush progressive collector: %w", err))
			}
		})
	}
	if o.running && o.worksQueue() {
		o.feeder.Stop() // no new batch while the queue drains
		wg.Go(func() {
			if err := o.queue.Stop(ctx); err != nil {
				report(fmt.Errorf("stop queue: %w", err))
			}
		})
	}
	wg.Go(func() {
		if err := o.runs.drain(ctx); err != nil {
			report(fmt.Errorf("wait for inline migrations: %w", err))
		}
	})
	wg.Wait()
	if o.servers != nil {
		o.servers.Stop()
	}

	if o.running && o.cfg.Strategy == StrategyProgressive {
		// Requests served while the rest drained may have added tenants.
		if err := o.collector.Stop(ctx); err != nil {
			report(fmt.Errorf("flush progressive collector: %w", err))
		}
	}
	if o.running {
		o.stopPruner()
		o.stopListener()
		// Last: the jobs have ended, and a job whose end could not be
		// recorded is rescued at once once the instance is marked stopped.
		if err := o.releaseHeartbeat(ctx); err != nil {
			report(fmt.Errorf("stop instance heartbeat: %w", err))
		}
		o.running = false
	}
	return errors.Join(errs...)
}

// runBackground runs fn on a goroutine that Stop waits for, with a context
// that Stop cancels at its deadline. It reports false, and runs nothing,
// when the Orchestrator is not running.
func (o *Orchestrator) runBackground(fn func(ctx context.Context)) bool {
	ctx, done, ok := o.runs.addBackground(context.Background())
	if !ok {
		return false
	}
	go func() {
		defer done()
		fn(ctx)
	}()
	return true
}

// cancelledByShutdown reports whether ctx, a migration run's, ended because a
// Stop reached its deadline: the run is interrupted, not failed, and nothing
// is recorded for it (but for a Down, which may have undone versions already:
// see run.Executor.Run).
func cancelledByShutdown(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return ctx.Err() != nil && (errors.Is(cause, errShutdown) || errors.Is(cause, queue.ErrShutdown))
}

// Listening reports whether the control-plane listener is connected. Only
// then does EnsureMigrated cache up-to-date tenants, because only then do
// changes made by other instances reach the cache.
func (o *Orchestrator) Listening() bool { return o.cache.live.Load() }

// runGroup tracks the migrations the Orchestrator runs itself, outside the
// queue: inline runs and background retries of stale tenants. Stop waits for
// them and cancels those still running at its deadline. Its lock is held only
// to count, never while waiting, so runs come and go while Stop waits.
type runGroup struct {
	mu         sync.Mutex
	n          int
	idle       chan struct{}   // closed when n drops to 0; nil when nobody waits
	stop       context.Context // cancelled with errShutdown at a Stop's deadline
	cancel     context.CancelCauseFunc
	background bool // background runs are accepted: between Start and Stop
}

func (g *runGroup) init() { g.stop, g.cancel = context.WithCancelCause(context.Background()) }

// add registers a run. The run uses the returned context, which is ctx also
// cancelled when a Stop reaches its deadline, and calls done when it has
// ended.
func (g *runGroup) add(ctx context.Context) (runCtx context.Context, done func()) {
	g.mu.Lock()
	g.n++
	stop := g.stop
	g.mu.Unlock()
	return g.bind(ctx, stop)
}

// addBackground is add for a background run; it registers nothing and
// reports false when background runs are not accepted.
func (g *runGroup) addBackground(ctx context.Context) (context.Context, func(), bool) {
	g.mu.Lock()
	if !g.background {
		g.mu.Unlock()
		return nil, nil, false
	}
	g.n++
	stop := g.stop
	g.mu.Unlock()
	runCtx, done := g.bind(ctx, stop)
	return runCtx, done, true
}

func (g *runGroup) bind(ctx, stop context.Context) (context.Context, func()) {
	runCtx, cancel := context.WithCancelCause(ctx)
	unbind := context.AfterFunc(stop, func() { cancel(context.Cause(stop)) })
	return runCtx, func() {
		unbind()
		cancel(nil)
		g.mu.Lock()
		g.n--
		if g.n == 0 && g.idle != nil {
			close(g.idle)
			g.idle = nil
		}
		g.mu.Unlock()
	}
}

func (g *runGroup) acceptBackground(ok bool) {
	g.mu.Lock()
	g.background = ok
	g.mu.Unlock()
}

// idleC returns a channel closed once no run is registered.
func (g *runGroup) idleC() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == 0 {
		closed := make(chan struct{})
		close(closed)
		return closed
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	return g.idle
}

// drain waits until no run is registered. If ctx ends first, it cancels the
// runs with errShutdown, waits up to hardStopTimeout for them to return and
// returns ctx's error. Runs added later get a fresh, uncancelled context.
func (g *runGroup) drain(ctx context.Context) error {
	select {
	case <-g.idleC():
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	cancel := g.cancel
	g.stop, g.cancel = context.WithCancelCause(context.Background())
	g.mu.Unlock()
	cancel(errShutdown)

	t := time.NewTimer(hardStopTimeout)
	defer t.Stop()
	select {
	case <-g.idleC():
		return fmt.Errorf("running migrations interrupted: %w", ctx.Err())
	case <-t.C:
		return fmt.Errorf("running migrations did not return %s after cancellation: %w", hardStopTimeout, ctx.Err())
	}
}
