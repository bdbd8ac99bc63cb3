package servers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/rivershared/startstop"
)

// ErrFull is wrapped by the error of Manager.Take when every slot of the
// server is taken.
var ErrFull = errors.New("server is at its cap of concurrent migrations")

// ErrRequestWaits is wrapped by the error of a Take without wait that a
// run of this process waiting for the server holds back (see Take); it
// wraps ErrFull. The server may have a free slot: the waiting run takes it.
var ErrRequestWaits = fmt.Errorf("%w: a request of this process waits for it", ErrFull)

// ErrDown is wrapped by the *DownError of Manager.Take for a server that is
// DOWN.
var ErrDown = errors.New("server is down")

// DownError says that a server is DOWN. It wraps ErrDown.
type DownError struct {
	Server string
	// Since is when it went DOWN.
	Since time.Time
	// LastError is its last connection-level failure.
	LastError string
}

func (e *DownError) Error() string {
	msg := fmt.Sprintf("database server %s is down since %s", e.Server, e.Since.UTC().Format(time.RFC3339))
	if e.LastError != "" {
		msg += ": " + e.LastError
	}
	return msg
}

// Unwrap returns ErrDown.
func (e *DownError) Unwrap() error { return ErrDown }

// Config configures a Manager. The zero value of each field means its
// default.
type Config struct {
	// Pool is the control-plane pool (schema tenantmigrate migrated).
	// Required. Slots are held on a connection of their own, made from its
	// configuration: the control plane must be reached directly or through
	// a pooler in session mode, which keeps session advisory locks.
	Pool *pgxpool.Pool
	// MaxPerServer is the cap of a server without an override. Defaults to
	// DefaultMaxPerServer (2).
	MaxPerServer int
	// ProbeInterval is how often a DOWN server is probed, by one process
	// for all. Defaults to DefaultProbeInterval (10s).
	ProbeInterval time.Duration
	// FailureThreshold connection-level failures within FailureWindow make a
	// server DOWN. Defaults to DefaultFailureThreshold (3) and
	// DefaultFailureWindow (30s).
	FailureThreshold int
	FailureWindow    time.Duration
	// Probe tries to reach the server, e.g. by connecting to one of its
	// tenants; a nil error, or one that IsConnectionError rejects (the
	// server answered), makes it UP. Defaults to none: a DOWN server comes
	// UP only through ReportReachable.
	Probe func(ctx context.Context, server string) error
	// OnUp is called after a DOWN server came UP, and OnFree after a slot of
	// a server was released, so that waiting work can go ahead at once.
	// Defaults to nothing.
	OnUp, OnFree func(ctx context.Context, server string)
	// MaxTakeBackoff bounds the pause between two looks of a run waiting
	// in Take for a slot. A slot released by this process wakes its oldest
	// waiting run at once; the looks find slots released by other
	// processes. Defaults to DefaultMaxTakeBackoff (200ms).
	MaxTakeBackoff time.Duration
	// Logger receives the changes of state and the errors of the prober.
	// Defaults to discarding.
	Logger *slog.Logger
}

// Manager takes slots and tracks the state of servers. It is safe for
// concurrent use.
type Manager struct {
	cfg Config

	connMu sync.Mutex // guards conn and held: a pgx.Conn is not concurrent
	conn   *pgx.Conn
	held   map[int64]bool // the advisory keys this process holds on conn

	idMu sync.Mutex
	ids  map[string]int32 // server -> servers.id, which never changes

	waitMu sync.Mutex
	// waiting holds, per server, a wake-up per run of this process waiting
	// in Take(wait), oldest first (see wakeWaiter).
	waiting map[string][]chan struct{}

	prober startstop.BaseStartStop // the background prober of Start
}

// New returns a Manager; it connects on first use.
func New(cfg Config) *Manager {
	if cfg.MaxPerServer <= 0 {
		cfg.MaxPerServer = DefaultMaxPerServer
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.FailureThreshold <= 0 {
		cfg.FailureThreshold = DefaultFailureThreshold
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = DefaultFailureWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnUp == nil {
		cfg.OnUp = func(context.Context, string) {}
	}
	if cfg.OnFree == nil {
		cfg.OnFree = func(context.Context, string) {}
	}
	if cfg.MaxTakeBackoff <= 0 {
		cfg.MaxTakeBackoff = DefaultMaxTakeBackoff
	}
	return &Manager{cfg: cfg, held: map[int64]bool{}, ids: map[string]int32{}}
}

// MaxPerServer is the cap of a server without an override.
func (m *Manager) MaxPerServer() int { return m.cfg.MaxPerServer }

// ProbeInterval is Config.ProbeInterval.
func (m *Manager) ProbeInterval() time.Duration { return m.cfg.ProbeInterval }

// Slot is one of a server's slots, held until Release.
type Slot struct {
	m      *Manager
	server string
	key    int64
	once   sync.Once
}

// Server is the server the slot belongs to.
func (s *Slot) Server() string { return s.server }

// Release frees the slot; it is safe to call twice and on a nil Slot.
func (s *Slot) Release(ctx context.Context) {
	if s == nil {
		return
	}
	s.once.Do(func() {
		ctx, cancel := cleanupCtx(ctx)
		defer cancel()
		s.m.unlock(ctx, s.key)
		s.m.wakeWaiter(s.server)
		s.m.cfg.OnFree(ctx, s.server)
	})
}

// lockNamespace is the high half of the advisory lock keys of slots: "tmsv".
const lockNamespace int64 = 0x746d_7376

// slotKey is the advisory lock of slot i of the server numbered id.
func slotKey(id int32, i int) int64 { return lockNamespace<<32 | int64(id)<<10 | int64(i) }

// serverRow is what Take needs of a server's row.
type serverRow struct {
	id        int32
	cap       int
	state     string
	since     time.Time
	lastError string
}

// Take takes a free slot of server. With wait it waits for one while the
// server is full, until ctx ends (returning an error wrapping ErrFull and
// ctx's error); without, it returns an error wrapping ErrFull at once. For a
// DOWN server it returns a *DownError, waiting or not. Any other error is
// the control plane's.
func (m *Manager) Take(ctx context.Context, server string, wait bool) (slot *Slot, err error) {
	// Runs that wait (a request, a migrate-now, a batch) go before the
	// queue's in this process: a queued job that finds one waiting for its
	// server takes no slot and is put back (it is woken when a slot frees),
	// so a freed slot goes to the waiting request, not to the job woken by
	// the release.
	var (
		woken     <-chan struct{} // a slot of the server was released here
		wokenUsed bool            // woken, and no look since found the server full
	)
	if wait {
		var leave func(passOn bool)
		woken, leave = m.addWaiter(server)
		// A run that took a wake-up and ends without a slot (its wait
		// ended during the look) passes it on: the released slot is free.
		defer func() { leave(slot == nil && wokenUsed) }()
	} else if m.hasWaiting(server) {
		return nil, fmt.Errorf("server %s: %w", server, ErrRequestWaits)
	}
	// ended is the error of a wait that ended: the server stayed full for
	// as long as the run could wait. A look under way when ctx ends fails
	// with ctx's error; that is the same end (nothing ran), not a fault of
	// the control plane, so a request gets its 503 with Retry-After.
	ended := func(err error) error {
		if wait && ctx.Err() != nil {
			return fmt.Errorf("server %s: %w: %w", server, ErrFull, context.Cause(ctx))
		}
		return err
	}
	backoff := 20 * time.Millisecond
	for {
		if wait && ctx.Err() != nil {
			return nil, ended(nil)
		}
		row, err := m.row(ctx, server)
		if err != nil {
			return nil, ended(err)
		}
		if row.state == string(stateDown) {
			return nil, &DownError{Server: server, Since: row.since, LastError: row.lastError}
		}
		for i := range row.cap {
			key := slotKey(row.id, i)
			ok, err := m.tryLock(ctx, key)
			if err != nil {
				return nil, ended(fmt.Errorf("take a slot of server %s: %w", server, err))
			}
			if !ok {
				continue
			}
			slot := &Slot{m: m, server: server, key: key}
			// Runs may hold slots at or above the cap (it was lowered, or
			// a process runs with a higher default): count them all.
			n, err := m.running(ctx, row.id)
			if err != nil || n > row.cap {
				m.unlock(ctx, key)
				if err != nil {
					return nil, ended(fmt.Errorf("take a slot of server %s: %w", server, err))
				}
				break
			}
			return slot, nil
		}
		if !wait {
			return nil, fmt.Errorf("server %s: %w", server, ErrFull)
		}
		wokenUsed = false // the look found the slot taken by another
		t := time.NewTimer(backoff/2 + rand.N(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ended(nil)
		case <-t.C:
		case <-woken:
			t.Stop()
			wokenUsed = true
		}
		backoff = min(2*backoff, m.cfg.MaxTakeBackoff)
	}
}

// DefaultMaxTakeBackoff is the default of Config.MaxTakeBackoff.
const DefaultMaxTakeBackoff = 200 * time.Millisecond

// addWaiter registers a run of this process waiting for a slot of server.
// It returns the run's wake-up and the function that removes it when the
// run stops waiting; passOn hands the next waiter the wake-up the run took
// and did not use.
func (m *Manager) addWaiter(server string) (<-chan struct{}, func(passOn bool)) {
	ch := make(chan struct{}, 1)
	m.waitMu.Lock()
	if m.waiting == nil {
		m.waiting = map[string][]chan struct{}{}
	}
	m.waiting[server] = append(m.waiting[server], ch)
	m.waitMu.Unlock()
	return ch, func(passOn bool) {
		m.waitMu.Lock()
		defer m.waitMu.Unlock()
		ws := slices.DeleteFunc(m.waiting[server], func(c chan struct{}) bool { return c == ch })
		if len(ws) == 0 {
			delete(m.waiting, server)
		} else {
			m.waiting[server] = ws
		}
		if passOn || len(ch) > 0 {
			// Woken but gone (its wait ended, or a look of its own took a
			// slot first): the wake-up is the next run's.
			m.wakeLocked(server)
		}
	}
}

// wakeWaiter wakes the oldest run of this process waiting for a slot of
// server that is not woken yet, after a slot was released here: the slot
// goes to the run that has waited longest at once, instead of staying free
// until some waiting run's next look (up to MaxTakeBackoff and its jitter
// later) and going to whichever looks first. A run of another process, or
// one of this process that looks by its timer meanwhile, may still take it
// first; the woken run then waits again.
func (m *Manager) wakeWaiter(server string) {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	m.wakeLocked(server)
}

func (m *Manager) wakeLocked(server string) {
	for _, c := range m.waiting[server] {
		select {
		case c <- struct{}{}:
			return
		default: // woken already, and not looked yet: the next one
		}
	}
}

func (m *Manager) hasWaiting(server string) bool {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	return len(m.waiting[server]) > 0
}

// Free returns how many slots of server no process holds now: its cap
// less the slots held (0 when runs hold more than the cap). After a
// release it is how many waiting jobs can start at once, which may be more
// than the one slot released: two slots released together each see both
// free.
func (m *Manager) Free(ctx context.Context, server string) (int, error) {
	row, err := m.row(ctx, server)
	if err != nil {
		return 0, err
	}
	n, err := m.running(ctx, row.id)
	if err != nil {
		return 0, fmt.Errorf("count held slots of server %s: %w", server, err)
	}
	return max(row.cap-n, 0), nil
}

// running counts the slots of the server numbered id held now, by every
// process.
func (m *Manager) running(ctx context.Context, id int32) (int, error) {
	var n int
	err := m.cfg.Pool.QueryRow(ctx, `
		SELECT count(*) FROM pg_locks
		WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND classid = $1::bigint::oid
			AND objid::bigint BETWEEN $2 AND $2 + 1023
			AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
		lockNamespace, int64(id)<<10).Scan(&n)
	return n, err
}

// row reads server's row, adding it when missing.
func (m *Manager) row(ctx context.Context, server string) (serverRow, error) {
	const q = `SELECT id, coalesce(max_concurrent, $2), state, since, coalesce(last_error, '')
		FROM tenantmigrate.servers WHERE server = $1`
	var r serverRow
	for range 2 {
		err := m.cfg.Pool.QueryRow(ctx, q, server, m.cfg.MaxPerServer).Scan(&r.id, &r.cap, &r.state, &r.since, &r.lastError)
		if err == nil {
			m.idMu.Lock()
			m.ids[server] = r.id
			m.idMu.Unlock()
			return r, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return r, fmt.Errorf("read server %s: %w", server, err)
		}
		if _, err := m.cfg.Pool.Exec(ctx,
			`INSERT INTO tenantmigrate.servers (server) VALUES ($1) ON CONFLICT (server) DO NOTHING`, server); err != nil {
			return r, fmt.Errorf("add server %s: %w", server, err)
		}
	}
	return r, fmt.Errorf("read server %s: %w", server, pgx.ErrNoRows)
}

// tryLock takes the advisory lock key on the slot connection, without
// waiting. Queries on that connection never use the caller's context: pgx
// closes a connection whose query is cancelled, and with it every slot of
// this process.
func (m *Manager) tryLock(ctx context.Context, key int64) (bool, error) {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if m.held[key] {
		// Session locks stack: this session would get it again.
		return false, nil
	}
	qctx, cancel := cleanupCtx(ctx)
	defer cancel()
	var ok bool
	for try := 0; ; try++ {
		conn, err := m.slotConn(qctx)
		if err != nil {
			return false, err
		}
		err = conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok)
		if err == nil {
			break
		}
		// A session the control plane lost (a restart, a failover) only
		// shows when it is used: once, on a new connection, it is tried
		// again.
		m.dropConn(qctx)
		if try > 0 || qctx.Err() != nil {
			return false, err
		}
	}
	if ok {
		m.held[key] = true
	}
	return ok, nil
}

func (m *Manager) unlock(ctx context.Context, key int64) {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	if !m.held[key] {
		return
	}
	delete(m.held, key)
	if m.conn == nil {
		return
	}
	if _, err := m.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
		m.cfg.Logger.Warn("release server slot", "err", err)
		m.dropConn(ctx)
	}
}

// slotConn returns the slot connection, opening it if needed. A new
// connection takes again the slots this process still holds (the old
// session's locks ended with it); one that another process took meanwhile
// is lost: its run goes on, over the cap until it ends.
func (m *Manager) slotConn(ctx context.Context) (*pgx.Conn, error) {
	if m.conn != nil && !m.conn.IsClosed() {
		return m.conn, nil
	}
	cc := m.cfg.Pool.Config().ConnConfig.Copy()
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	cc.RuntimeParams["application_name"] = "tenantmigrate-server-slots"
	// The session must die soon with a host that vanished without closing
	// it.
	cc.RuntimeParams["tcp_keepalives_idle"] = "5"
	cc.RuntimeParams["tcp_keepalives_interval"] = "2"
	cc.RuntimeParams["tcp_keepalives_count"] = "3"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect for server slots: %w", err)
	}
	// ... and outlive idleness (PostgreSQL 14 and later; older ones have
	// no such timeout, and refuse the setting).
	_, _ = conn.Exec(ctx, `SET idle_session_timeout = 0`)
	m.conn = conn
	for key := range m.held {
		var ok bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&ok); err != nil || !ok {
			delete(m.held, key)
		}
	}
	return conn, nil
}

func (m *Manager) dropConn(ctx context.Context) {
	if m.conn != nil {
		_ = m.conn.Close(ctx)
		m.conn = nil
	}
}

// Close releases every slot this process holds and closes its connection.
func (m *Manager) Close(ctx context.Context) {
	m.Stop()
	m.connMu.Lock()
	defer m.connMu.Unlock()
	ctx, cancel := cleanupCtx(ctx)
	defer cancel()
	m.held = map[int64]bool{}
	m.dropConn(ctx)
}

// cleanupCtx detaches ctx from cancellation for a short control-plane
// statement.
func cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
