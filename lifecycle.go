package tenantmigrate

import (
	"context"
	"errors"
	"fmt"
)

// Start runs the Orchestrator's background parts: the control-plane listener
// that keeps the up-to-date cache correct across instances and, depending on
// the strategy, the queue workers (Config.RunWorkers), the fleet scan
// (full_fleet) and the progressive collector. Call Stop to end them.
func (o *Orchestrator) Start(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.started {
		return errors.New("orchestrator already started")
	}
	o.started = true
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	o.bgContext, o.cancelBG = bg, cancel

	o.bgDone.Add(1)
	go func() {
		defer o.bgDone.Done()
		err := o.store.Listen(bg, o.cache.drop, func() {
			o.cache.reset()
			o.cache.live.Store(true)
		}, func() {
			// Changes go unheard until the listener is back: serve nothing
			// from the cache meanwhile (see latestCache.has).
			o.cache.live.Store(false)
		})
		o.cache.live.Store(false)
		if err != nil && !errors.Is(err, context.Canceled) {
			o.logger.Error("control-plane listener stopped", "err", err)
		}
	}()

	if o.cfg.RunWorkers && o.cfg.Strategy != StrategyOnRequest {
		if err := o.queue.Start(ctx); err != nil {
			return fmt.Errorf("start queue: %w", err)
		}
	}
	if o.cfg.Strategy == StrategyProgressive {
		if err := o.collector.Start(ctx); err != nil {
			return fmt.Errorf("start progressive collector: %w", err)
		}
	}
	return nil
}

// Stop ends background work gracefully: the progressive collector flushes
// the tenants it holds to the queue, running jobs finish, and the listener
// closes. It is safe to call more than once.
func (o *Orchestrator) Stop(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.started || o.stopped {
		return nil
	}
	o.stopped = true
	var errs []error
	if o.cfg.Strategy == StrategyProgressive {
		if err := o.collector.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush progressive collector: %w", err))
		}
	}
	if o.cfg.RunWorkers && o.cfg.Strategy != StrategyOnRequest {
		if err := o.queue.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop queue: %w", err))
		}
	}
	o.cancelBG()
	o.bgDone.Wait()
	return errors.Join(errs...)
}

// runBackground runs fn on a goroutine that Stop waits for. It reports false,
// and runs nothing, when the Orchestrator is not running.
func (o *Orchestrator) runBackground(fn func(ctx context.Context)) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.started || o.stopped {
		return false
	}
	o.bgDone.Add(1)
	go func() {
		defer o.bgDone.Done()
		fn(o.bgContext)
	}()
	return true
}

// Listening reports whether the control-plane listener is connected. Only
// then does EnsureMigrated cache up-to-date tenants, because only then do
// changes made by other instances reach the cache.
func (o *Orchestrator) Listening() bool { return o.cache.live.Load() }
