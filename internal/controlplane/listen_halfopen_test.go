package controlplane

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// freezingProxy forwards TCP to target until frozen; then it forwards
// nothing more and closes nothing, as a path that lost its state silently
// (a failover whose old host vanished, a NAT or load balancer that dropped
// the flow).
type freezingProxy struct {
	ln      net.Listener
	frozen  atomic.Bool
	release chan struct{}
	once    sync.Once
}

func newFreezingProxy(t *testing.T, target string) *freezingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &freezingProxy{ln: ln, release: make(chan struct{})}
	t.Cleanup(func() { p.once.Do(func() { close(p.release) }); _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			go p.pipe(c, u)
			go p.pipe(u, c)
		}
	}()
	return p
}

func (p *freezingProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if p.frozen.Load() {
			<-p.release
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				_ = dst.Close()
			}
			return
		}
	}
}

// TestListenDetectsSilentlyLostSession: the listener's session is lost
// without the connection closing (the path to the control plane froze).
// Changes go unheard from then on, so the listener must report the session
// lost (onLost, after which the gate distrusts its cache) within a bounded
// time, not only when the kernel's keepalive gives up (tens of minutes).
func TestListenDetectsSilentlyLostSession(t *testing.T) {
	t.Parallel()
	writer := newTestStore(t)
	ctx := testContext(t)
	u, err := url.Parse(writer.Pool().Config().ConnString())
	require.NoError(t, err)
	proxy := newFreezingProxy(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	reader := NewStore(newTestPool(t, u.String()), nil)

	resets, lost, changes := make(chan struct{}, 10), make(chan struct{}, 10), make(chan string, 10)
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- reader.Listen(lctx, func(id string) { changes <- id },
			func() { resets <- struct{}{} }, func() { lost <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); proxy.once.Do(func() { close(proxy.release) }); <-done })
	select {
	case <-resets:
	case <-time.After(listenTimeout):
		t.Fatal("no onReset")
	}

	proxy.frozen.Store(true)
	_, err = writer.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	select {
	case id := <-changes:
		t.Fatalf("onChange(%q) through a frozen path", id)
	case <-lost:
	case <-time.After(30 * time.Second):
		t.Fatal("30 s after the session was lost, the listener still trusts it (no onLost); acme's change went unheard")
	}
}

// TestListenIdleSessionKept: a healthy session quiet for longer than
// the idle check keeps listening: no onLost, no second onReset, and the next
// change arrives.
func TestListenIdleSessionKept(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := testContext(t)
	resets, lost, changes := make(chan struct{}, 10), make(chan struct{}, 10), make(chan string, 10)
	lctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(lctx, func(id string) { changes <- id },
			func() { resets <- struct{}{} }, func() { lost <- struct{}{} })
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-resets
	quiet := time.NewTimer(25 * time.Second) // two idle checks and more; observing that nothing happens
	select {
	case <-lost:
		t.Fatal("onLost on a healthy idle session")
	case <-resets:
		t.Fatal("second onReset on a healthy idle session")
	case <-quiet.C:
	}
	_, err := s.Create(ctx, Tenant{ID: "acme", DatabaseURL: testURL})
	require.NoError(t, err)
	select {
	case id := <-changes:
		require.Equal(t, "acme", id)
	case <-time.After(listenTimeout):
		t.Fatal("no onChange after the idle checks")
	}
	require.Empty(t, lost)
	require.Empty(t, resets)
}
