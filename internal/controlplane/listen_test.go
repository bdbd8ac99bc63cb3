package controlplane

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// listener runs Store.Listen and exposes its callbacks as channels.
type listener struct {
	changes chan string
	resets  chan struct{}
	done    chan error
	cancel  context.CancelFunc
}

func startListener(t *testing.T, s *Store) *listener {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{
		changes: make(chan string, 100),
		resets:  make(chan struct{}, 100),
		done:    make(chan error, 1),
		cancel:  cancel,
	}
	go func() {
		l.done <- s.Listen(ctx,
			func(id string) { l.changes <- id },
			func() { l.resets <- struct{}{} },
			nil)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-l.done:
		case <-time.After(10 * time.Second):
			t.Error("Listen did not return after cancel")
		}
	})
	return l
}

const listenTimeout = 10 * time.Second

func (l *listener) requireReset(t *testing.T) {
	t.Helper()
	select {
	case <-l.resets:
	case err := <-l.done:
		t.Fatalf("Listen returned: %v", err)
	case <-time.After(listenTimeout):
		t.Fatal("no onReset")
	}
}

func (l *listener) requireChange(t *testing.T, want string) {
	t.Helper()
	select {
	case got := <-l.changes:
		require.Equal(t, want, got)
	case err := <-l.done:
		t.Fatalf("Listen returned: %v", err)
	case <-time.After(listenTimeout):
		t.Fatalf("no onChange(%q)", want)
	}
}

func TestListen(t *testing.T) {
	t.Parallel()
	writer := newTestStore(t)
	ctx := testContext(t)

	// The listening store has its own pool, as another instance would.
	reader := NewStore(newTestPool(t, writer.Pool().Config().ConnString()), nil)
	l := startListener(t, reader)
	l.requireReset(t) // listening from here on

	_, err := writer.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	l.requireChange(t, "acme")
	_, err = writer.Create(ctx, Tenant{ID: "beta", DatabaseURL: testURL})
	require.NoError(t, err)
	l.requireChange(t, "beta")

	// Version changes, up and down.
	require.NoError(t, writer.RecordSuccess(ctx, "acme", currentOrigin(t, writer, "acme"), 2))
	l.requireChange(t, "acme")
	require.NoError(t, writer.RecordSuccess(ctx, "acme", currentOrigin(t, writer, "acme"), 1))
	l.requireChange(t, "acme")

	// Writes that change neither version, status, URL nor schema notify
	// nothing: the next notification is beta's. Notifications arrive in
	// commit order, so acme's would come first.
	require.NoError(t, writer.RecordSuccess(ctx, "acme", currentOrigin(t, writer, "acme"), 1))
	_, _, err = writer.Upsert(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	require.NoError(t, writer.RecordFailure(ctx, "beta", currentOrigin(t, writer, "beta"), nil, StatusFailed, "first"))
	l.requireChange(t, "beta") // status transition
	require.NoError(t, writer.RecordFailure(ctx, "beta", currentOrigin(t, writer, "beta"), nil, StatusFailed, "second"))
	_, err = writer.Patch(ctx, "acme", TenantPatch{Schema: ptr("acme_schema")})
	require.NoError(t, err)
	l.requireChange(t, "acme") // schema change

	_, err = writer.Patch(ctx, "beta", TenantPatch{DatabaseURL: ptr("postgres://app:new@db2/beta")})
	require.NoError(t, err)
	l.requireChange(t, "beta") // URL change

	require.NoError(t, writer.Delete(ctx, "acme"))
	l.requireChange(t, "acme")

	_, err = writer.Pool().Exec(ctx, "TRUNCATE tenantmigrate.tenants")
	require.NoError(t, err)
	l.requireReset(t)

	select {
	case id := <-l.changes:
		t.Fatalf("unexpected onChange(%q)", id)
	default:
	}
}

func TestListenReconnects(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	l := startListener(t, s)
	l.requireReset(t)

	for range 2 {
		// Kill the listener's backend, found by its application_name.
		var killed int
		require.NoError(t, s.Pool().QueryRow(ctx, `
			SELECT count(*) FROM (
				SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE application_name = $1 AND datname = current_database()
			) AS k`, ListenerApplicationName).Scan(&killed))
		require.GreaterOrEqual(t, killed, 1)

		l.requireReset(t)

		// Listening again.
		_, err := s.Create(ctx, Tenant{ID: "after-reconnect", DatabaseURL: testURL})
		require.NoError(t, err)
		l.requireChange(t, "after-reconnect")
		require.NoError(t, s.Delete(ctx, "after-reconnect"))
		l.requireChange(t, "after-reconnect")
	}

	// Cancel ends Listen with nil.
	l.cancel()
	select {
	case err := <-l.done:
		require.NoError(t, err)
		l.done <- nil // for the cleanup
	case <-time.After(listenTimeout):
		t.Fatal("Listen did not return after cancel")
	}
}

func TestListenFailsWhenItCannotConnect(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	cfg := s.Pool().Config()
	cfg.ConnConfig.Database = "controlplane_test_does_not_exist"
	pool, err := pgxpool.NewWithConfig(testContext(t), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	called := false
	err = NewStore(pool, nil).Listen(testContext(t), func(string) { called = true }, func() { called = true }, nil)
	require.ErrorContains(t, err, "listen for tenant changes")
	require.False(t, called)
}
