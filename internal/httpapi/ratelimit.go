package httpapi

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed admin authentications are limited per client address, so that the
// admin keys cannot be guessed at network speed.
//
// What counts as a failure: a wrong key in the apikey or Authorization
// header, or in the login form. Not a successful authentication, not a
// request without a key (it gets its 401 or its redirect to the login form
// as before), not a bad session cookie (an HMAC, which cannot be guessed;
// see session.go), and nothing while the admin API is disabled.
//
// Each client address has a token bucket (golang.org/x/time/rate) of Burst
// failures refilled one per Every. A request that presents a key, or posts
// the login form, while its address has no token left is answered 429 with
// Retry-After, before its key is even compared: a right key is refused too
// until the bucket refills, so guessing is no faster than one key per Every.
// Session cookies still open what they open, so an operator who is logged
// in keeps the fleet page while someone at the same address is refused.
//
// The client address is the IP of r.RemoteAddr, never X-Forwarded-For,
// which the client writes. IPv6 addresses count per /64, the block a single
// host or site usually holds, so that one attacker does not get 2^64
// buckets. Behind a reverse proxy every client has the proxy's address and
// shares one bucket: the proxy should limit per client itself.
//
// Memory is bounded: at most MaxClients addresses are tracked, in order of
// their last failure; a new one evicts the least recent, and addresses
// whose bucket is full again (as if never seen) are dropped as they reach
// the end of that order.

// AuthFailureLimit bounds failed admin authentications per client address;
// see Config.AuthFailureLimit. A zero field means its default.
type AuthFailureLimit struct {
	// Burst is how many failed authentications a client address may make in
	// a row before it is refused (429). Defaults to 10.
	Burst int

	// Every is how long it takes a refused client address to earn one more
	// attempt, up to Burst. Defaults to 1s.
	Every time.Duration

	// MaxClients caps the client addresses tracked at once (about 250 bytes
	// each); past it, the address whose last failure is the oldest is
	// forgotten. Defaults to 10,000.
	MaxClients int
}

// Defaults of AuthFailureLimit.
const (
	DefaultAuthFailureBurst      = 10
	DefaultAuthFailureEvery      = time.Second
	DefaultAuthFailureMaxClients = 10_000
)

// withDefaults returns l with its zero fields set to their defaults, or an
// error for a negative field.
func (l AuthFailureLimit) withDefaults() (AuthFailureLimit, error) {
	if l.Burst < 0 || l.Every < 0 || l.MaxClients < 0 {
		return l, errors.New("httpapi: Config.AuthFailureLimit fields must not be negative")
	}
	if l.Burst == 0 {
		l.Burst = DefaultAuthFailureBurst
	}
	if l.Every == 0 {
		l.Every = DefaultAuthFailureEvery
	}
	if l.MaxClients == 0 {
		l.MaxClients = DefaultAuthFailureMaxClients
	}
	return l, nil
}

// failLimiter tracks failed authentications per client address. The admin
// API and the login form share one, so failures at either count against
// both.
type failLimiter struct {
	limit      rate.Limit
	burst      int
	maxClients int
	now        func() time.Time

	mu sync.Mutex
	// clients maps an address to its element of lru.
	clients map[netip.Addr]*list.Element
	// lru holds *failClient, the most recent failure at the front.
	lru *list.List
}

// failClient is one tracked client address.
type failClient struct {
	addr netip.Addr
	lim  *rate.Limiter
}

func newFailLimiter(l AuthFailureLimit) *failLimiter {
	return &failLimiter{
		limit:      rate.Every(l.Every),
		burst:      l.Burst,
		maxClients: l.MaxClients,
		now:        time.Now,
		clients:    make(map[netip.Addr]*list.Element),
		lru:        list.New(),
	}
}

// clientAddr is the address whose bucket r counts against: the IP of
// r.RemoteAddr, IPv4-mapped IPv6 as IPv4, other IPv6 cut to its /64. A
// RemoteAddr that is no IP (a Unix socket) gives the zero Addr, one bucket
// for all such clients.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap().WithZone("")
	if addr.Is6() {
		addr = netip.PrefixFrom(addr, 64).Masked().Addr()
	}
	return addr
}

// refused returns how long r's client must wait before it may present a key
// again; 0 when it may now.
func (fl *failLimiter) refused(r *http.Request) time.Duration {
	addr := clientAddr(r)
	fl.mu.Lock()
	defer fl.mu.Unlock()
	e, ok := fl.clients[addr]
	if !ok {
		return 0
	}
	lim := e.Value.(*failClient).lim
	tokens := lim.TokensAt(fl.now())
	if tokens >= 1 {
		return 0
	}
	// The time the bucket takes to refill to one token.
	return time.Duration(math.Ceil((1 - tokens) / float64(fl.limit) * float64(time.Second)))
}

// fail records a failed authentication by r's client.
func (fl *failLimiter) fail(r *http.Request) {
	addr := clientAddr(r)
	fl.mu.Lock()
	defer fl.mu.Unlock()
	now := fl.now()
	if e, ok := fl.clients[addr]; ok {
		fl.lru.MoveToFront(e)
		// false when concurrent failures emptied the bucket since
		// refused: it stays empty.
		e.Value.(*failClient).lim.AllowN(now, 1)
		return
	}
	// Make room: evict the least recent client while at the cap, and drop
	// the least recent ones whose bucket is full again anyway. Each client
	// is removed once, so this is O(1) per failure on average.
	for back := fl.lru.Back(); back != nil; back = fl.lru.Back() {
		c := back.Value.(*failClient)
		if fl.lru.Len() < fl.maxClients && c.lim.TokensAt(now) < float64(fl.burst) {
			break
		}
		fl.lru.Remove(back)
		delete(fl.clients, c.addr)
	}
	lim := rate.NewLimiter(fl.limit, fl.burst)
	lim.AllowN(now, 1)
	fl.clients[addr] = fl.lru.PushFront(&failClient{addr: addr, lim: lim})
}

// errTooManyFailures is the log error of a refused request. It names no key.
var errTooManyFailures = errors.New("admin auth: too many failed attempts from this address")

// setRetryAfter sets the Retry-After header for a wait, in whole seconds
// rounded up, and returns them.
func setRetryAfter(w http.ResponseWriter, wait time.Duration) int {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return secs
}

// tooManyFailures is the message of a refused request.
func tooManyFailures(secs int) string {
	return fmt.Sprintf("too many failed authentication attempts from your address: retry in %d s", secs)
}
