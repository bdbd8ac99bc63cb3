package migrator

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// cutProxy forwards TCP connections to target until cut, which closes the listener and every
// connection: the database server "goes away" for the client.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(s, c); s.Close() }()
			go func() { _, _ = io.Copy(c, s); c.Close() }()
		}
	}()
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) cut() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

// TestDownServerGoneReportsWhereItStopped: Down's contract is "Result.Version the version
// after the run (on failure, the version where it stopped: the failed migration's own)". A Down
// that undid 3 and lost its server inside 2's Down reports Applied [3]; its Version must not be
// -1 ("unknown"), which makes the executor keep the control plane's 3, a version the tenant no
// longer has.
func TestDownServerGoneReportsWhereItStopped(t *testing.T) {
	t.Parallel()
	dbURL := newTestDB(t)
	m := newMigrator(t, Config{FS: sqlFS(map[string]string{
		"00001_a.sql": "-- +goose Up\nCREATE TABLE a (id int);\n-- +goose Down\nDROP TABLE a;\n",
		"00002_b.sql": "-- +goose Up\nCREATE TABLE b (id int);\n-- +goose Down\nSELECT pg_sleep(30);\nDROP TABLE b;\n",
		"00003_c.sql": "-- +goose Up\nCREATE TABLE c (id int);\n-- +goose Down\nDROP TABLE c;\n",
	})})
	_, err := m.Migrate(t.Context(), Target{DatabaseURL: dbURL, Schema: "tn"})
	require.NoError(t, err)

	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()

	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		res, err := m.Down(t.Context(), Target{DatabaseURL: u.String(), Schema: "tn"}, 0)
		done <- out{res, err}
	}()
	conn := connect(t, dbURL)
	waitFor(t, 20*time.Second, "the Down of 2 running", func() bool {
		return queryBool(t, conn, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(30)%')`)
	})
	proxy.cut()
	var o out
	select {
	case o = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Down did not return")
	}
	t.Logf("Down: %+v, %v", o.res, o.err)
	require.Error(t, o.err)
	waitFor(t, 20*time.Second, "the server ended the session", func() bool {
		return !queryBool(t, conn, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT pg_sleep(30)%')`)
	})
	require.Equal(t, []int64{0, 1, 2}, appliedVersions(t, conn, "tn"))
	require.Equal(t, []int64{3}, o.res.Applied)
	require.Equal(t, int64(2), o.res.Version, "the version where it stopped")
}
