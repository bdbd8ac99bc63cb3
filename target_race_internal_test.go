package tenantmigrate

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tenantmigrate/tenantmigrate/internal/controlplane"
)

// TestApplyTargetConcurrentOlderReadLoses: two reads of the stored fleet
// target reach applyTarget at once, as they do when the listener hears a
// change while a run's StoredTarget check (under a tenant's lock) read the
// target just before it: the older read (generation 4, pinned at 5) must
// never win over the newer one (generation 5, pin cleared).
func TestApplyTargetConcurrentOlderReadLoses(t *testing.T) {
	five := int64(5)
	older := controlplane.FleetTarget{Version: &five, Generation: 4}
	newer := controlplane.FleetTarget{Version: nil, Generation: 5}
	bad := 0
	const rounds = 20000
	for range rounds {
		o := &Orchestrator{latest: 10, logger: slog.New(slog.DiscardHandler)}
		o.cache.init()
		o.target.init()
		o.target.gen.Store(3)
		o.target.pin.Store(5)
		var ready atomic.Int32
		var wg sync.WaitGroup
		wg.Add(2)
		for _, ft := range []controlplane.FleetTarget{older, newer} {
			go func() {
				defer wg.Done()
				ready.Add(1)
				for ready.Load() < 2 { // both on a core before either applies
				}
				o.applyTarget(t.Context(), ft)
			}()
		}
		wg.Wait()
		if o.target.gen.Load() != 5 || o.Target() != 10 {
			bad++
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d rounds ended aiming at the older read: target %d instead of 10 (the stored pin is cleared)", bad, rounds, 5)
	}
}
