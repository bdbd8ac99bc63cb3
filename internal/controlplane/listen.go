package controlplane

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 10 * time.Second
)

// Listen listens for changes of tenants (see NotifyChannel and the triggers of
// the tenants table) on a dedicated connection made from the pool's
// configuration, with application_name ListenerApplicationName, until ctx is
// done; it then returns nil.
//
// It calls onChange with the tenant's id for each notification, and onReset
// once it listens: after the first connection and after each reconnection,
// because notifications may have been missed meanwhile. A notification
// without a tenant id (TRUNCATE) also calls onReset. It calls onLost as soon
// as a connection that listened fails, before it reconnects: from then until
// the next onReset, changes go unheard, so a cache must not be trusted. When the connection
// drops, Listen reconnects with exponential backoff (up to 10s) and retries
// forever; only a failure to connect the first time is returned, so that a
// wrong configuration shows at startup. The callbacks run on Listen's
// goroutine and should return quickly; any may be nil.
func (s *Store) Listen(ctx context.Context, onChange func(tenantID string), onReset, onLost func()) error {
	return s.ListenWith(ctx, Listener{OnChange: onChange, OnReset: onReset, OnLost: onLost})
}

// Listener are the callbacks of ListenWith; each may be nil.
type Listener struct {
	// OnChange, OnReset and OnLost are Listen's.
	OnChange        func(tenantID string)
	OnReset, OnLost func()
	// OnTarget is called when the fleet target changed (a notification
	// with TargetPayload). After OnReset the target may have changed too.
	OnTarget func()
}

// ListenWith is Listen with a callback for changes of the fleet target too.
func (s *Store) ListenWith(ctx context.Context, l Listener) error {
	onChange, onReset, onLost, onTarget := l.OnChange, l.OnReset, l.OnLost, l.OnTarget
	if onTarget == nil {
		onTarget = func() {}
	}
	if onChange == nil {
		onChange = func(string) {}
	}
	if onReset == nil {
		onReset = func() {}
	}
	if onLost == nil {
		onLost = func() {}
	}
	connConfig := s.pool.Config().ConnConfig // a copy
	if connConfig.RuntimeParams == nil {
		connConfig.RuntimeParams = map[string]string{}
	}
	connConfig.RuntimeParams["application_name"] = ListenerApplicationName

	backoff := listenMinBackoff
	for connected := false; ; {
		conn, err := listenConnect(ctx, connConfig)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if !connected {
				return fmt.Errorf("listen for tenant changes: %w", err)
			}
			if !waitBackoff(ctx, &backoff) {
				return nil
			}
			continue
		}
		connected = true
		start := time.Now()
		onReset()
		receive(ctx, conn, func(id string) {
			if id == TargetPayload {
				onTarget()
				return
			}
			onChange(id)
		}, onReset)
		onLost()
		closeConn(ctx, conn)
		if ctx.Err() != nil {
			return nil
		}
		// A connection that lived long resets the backoff; one that keeps
		// dropping right away backs off.
		if time.Since(start) > listenMaxBackoff {
			backoff = listenMinBackoff
		}
		if !waitBackoff(ctx, &backoff) {
			return nil
		}
	}
}

// listenConnect connects and LISTENs on NotifyChannel.
func listenConnect(ctx context.Context, connConfig *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, connConfig)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		closeConn(ctx, conn)
		return nil, err
	}
	return conn, nil
}

// listenIdleCheck is how long the listener waits for a notification before
// it checks that its session still answers, and listenCheckTimeout how long
// that check may take: a session lost without its connection closing (a
// path that froze, a host that vanished) shows no error until the kernel's
// keepalive gives up, tens of minutes later, and its changes go unheard.
const (
	listenIdleCheck    = 10 * time.Second
	listenCheckTimeout = 5 * time.Second
)

// receive delivers notifications until the connection fails, stops
// answering, or ctx is done.
func receive(ctx context.Context, conn *pgx.Conn, onChange func(string), onReset func()) {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdleCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && wctx.Err() != nil && !conn.IsClosed() {
			// Quiet: does the session still answer? Notifications that
			// arrive during the check are kept for the next wait.
			pctx, cancel := context.WithTimeout(ctx, listenCheckTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
			return
		}
		if err != nil {
			return
		}
		if n.Payload == "" {
			onReset()
			continue
		}
		onChange(n.Payload)
	}
}

// waitBackoff waits for the backoff, with jitter, and doubles it. It reports
// false when ctx is done first.
func waitBackoff(ctx context.Context, backoff *time.Duration) bool {
	d := *backoff/2 + rand.N(*backoff/2+1)
	*backoff = min(*backoff*2, listenMaxBackoff)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func closeConn(ctx context.Context, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}
