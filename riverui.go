package tenantmigrate

import (
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// RiverClient returns the River client of the Orchestrator's job queue, for
// River UI (riverqueue.com/riverui) or tests. Its jobs live in the control
// plane's schema "tenantmigrate". Do not start or stop it: Start and Stop
// do.
func (o *Orchestrator) RiverClient() *river.Client[pgx.Tx] { return o.queue.Client() }
