package httpapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"net/http"
	"path"
	"strings"
	"time"
)

// Browser sessions.
//
// A browser cannot send the apikey header from a link, so POST /admin/login
// trades a valid key for a session cookie (see login.go). The cookie never
// holds the key. It holds a token:
//
//	base64url( version(1) | expiry(8, Unix seconds, big endian) | nonce(16) | mac(32) )
//
// where mac is HMAC-SHA256 over the first 25 bytes, keyed with a secret
// derived from the admin key that logged in: HMAC-SHA256(SHA-256(key),
// sessionLabel). So:
//
//   - a token cannot be forged or extended without a configured key;
//   - a token stops working when its key leaves Config.AdminAPIKeys (key
//     rotation logs out its sessions), and at its expiry, sessionMaxAge
//     after login;
//   - every instance that shares the keys accepts the token, across restarts
//     and behind a load balancer; there is no server-side session state, so
//     logout clears the cookie but cannot revoke a copy of it: treat the
//     cookie as the key for its 12 hours.
//
// A token is checked against the secret of every configured key, in constant
// time per key, like keyChecker.valid.
//
// What a session opens (keyChecker.checkSession):
//
//   - GET and HEAD anywhere under /admin: the fleet page, River UI's pages,
//     assets and reads, and the JSON admin API's reads;
//   - every method under RiverUIPrefix, because River UI's single-page app
//     posts its own actions (retry, cancel, delete jobs, pause queues) with
//     the cookie. Those requests are protected from cross-site request
//     forgery by SameSite=Strict (the browser does not attach the cookie to
//     a request started by another site) and, for browsers that predate it,
//     by http.CrossOriginProtection (Sec-Fetch-Site / Origin checks);
//   - not the JSON admin API's POST, PUT, PATCH and DELETE: those change the
//     fleet, and their clients are scripts that can send the key header, so
//     they take nothing that a browser attaches on its own.

const (
	// sessionCookieName names the session cookie.
	sessionCookieName = "tenantmigrate_admin_session"
	// sessionCookiePath scopes the cookie to the admin pages.
	sessionCookiePath = "/admin"
	// sessionMaxAge is how long a session lasts after login.
	sessionMaxAge = 12 * time.Hour
	// sessionClockSkew is how far in the future of now+sessionMaxAge an
	// expiry may be and still be taken, for instances whose clocks differ.
	sessionClockSkew = 5 * time.Minute

	sessionVersion     = 1
	sessionNonceSize   = 16
	sessionPayloadSize = 1 + 8 + sessionNonceSize
	sessionTokenSize   = sessionPayloadSize + sha256.Size
)

// sessionLabel separates session secrets from any other use of the keys.
var sessionLabel = []byte("tenantmigrate admin session v1")

// sessionEncoding encodes tokens; Strict rejects non-canonical encodings, so
// one token has exactly one spelling.
var sessionEncoding = base64.RawURLEncoding.Strict()

// Errors of checkSession; their messages are shown to the client.
var (
	errNoSession      = errors.New(`missing API key: send it as "apikey: KEY" or "Authorization: Bearer KEY", or log in at /admin/login`)
	errBadSession     = errors.New("invalid session: log in again at /admin/login")
	errExpiredSession = errors.New("session expired: log in again at /admin/login")
)

// sessionSecret derives the session secret of the key whose SHA-256 digest
// is digest.
func sessionSecret(digest [sha256.Size]byte) []byte {
	m := hmac.New(sha256.New, digest[:])
	m.Write(sessionLabel)
	return m.Sum(nil)
}

// sessionMAC signs payload with secret.
func sessionMAC(secret, payload []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(payload)
	return m.Sum(nil)
}

// newSessionToken returns a session token for key, which the caller has
// checked with keyChecker.valid, valid until now+sessionMaxAge.
func newSessionToken(key string, now time.Time) string {
	var tok [sessionTokenSize]byte
	tok[0] = sessionVersion
	binary.BigEndian.PutUint64(tok[1:9], uint64(now.Add(sessionMaxAge).Unix()))
	_, _ = rand.Read(tok[9:sessionPayloadSize]) // never fails
	mac := sessionMAC(sessionSecret(sha256.Sum256([]byte(key))), tok[:sessionPayloadSize])
	copy(tok[sessionPayloadSize:], mac)
	return sessionEncoding.EncodeToString(tok[:])
}

// validSession checks a session token at time now: nil, errBadSession or
// errExpiredSession.
func (kc keyChecker) validSession(token string, now time.Time) error {
	if len(token) != sessionEncoding.EncodedLen(sessionTokenSize) {
		return errBadSession
	}
	tok, err := sessionEncoding.DecodeString(token)
	if err != nil || len(tok) != sessionTokenSize || tok[0] != sessionVersion {
		return errBadSession
	}
	payload, mac := tok[:sessionPayloadSize], tok[sessionPayloadSize:]
	match := 0
	for _, secret := range kc.sessionSecrets {
		match |= subtle.ConstantTimeCompare(mac, sessionMAC(secret, payload))
	}
	if match != 1 {
		return errBadSession
	}
	// Signed by us: the expiry is one we wrote.
	expiry := int64(binary.BigEndian.Uint64(tok[1:9]))
	switch {
	case now.Unix() >= expiry:
		return errExpiredSession
	case expiry > now.Add(sessionMaxAge+sessionClockSkew).Unix():
		// Written by an instance whose clock is far ahead, or with a longer
		// max age than this one allows.
		return errBadSession
	}
	return nil
}

// checkSession decides whether the session cookies of r open the request,
// at time now. It returns nil, errNoSession when r has no session cookie,
// or a *requestError to answer.
func (kc keyChecker) checkSession(r *http.Request, now time.Time) error {
	cookies := r.CookiesNamed(sessionCookieName)
	if len(cookies) == 0 {
		return errNoSession
	}
	// A browser may send two cookies of this name (e.g. one of a parent
	// path); any valid one will do.
	var err error
	for _, c := range cookies {
		if err = kc.validSession(c.Value, now); err == nil {
			break
		}
	}
	if err != nil {
		return &requestError{status: http.StatusUnauthorized, msg: err.Error()}
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	if !underRiverUI(r.URL.Path) {
		return &requestError{
			status: http.StatusUnauthorized,
			msg: "a browser session opens only GET requests of the admin API: send the API key " +
				`("apikey: KEY" or "Authorization: Bearer KEY") for ` + r.Method,
		}
	}
	if err := kc.crossOrigin.Check(r); err != nil {
		return &requestError{status: http.StatusForbidden, msg: "cross-origin request refused"}
	}
	return nil
}

// underRiverUI reports whether the (cleaned) path is RiverUIPrefix or below.
func underRiverUI(p string) bool {
	p = path.Clean("/" + p)
	return p == RiverUIPrefix || strings.HasPrefix(p, RiverUIPrefix+"/")
}

// sessionCookie returns the cookie that holds token, or that clears the
// session when token is "".
func sessionCookie(r *http.Request, token string) *http.Cookie {
	c := &http.Cookie{
		Name:     sessionCookieName,
		Value:    token,
		Path:     sessionCookiePath,
		MaxAge:   int(sessionMaxAge / time.Second),
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   requestIsTLS(r),
	}
	if token == "" {
		c.MaxAge = -1 // Max-Age=0: delete now
	}
	return c
}

// requestIsTLS reports whether the client reached us over TLS: directly, or
// through a proxy that says so with X-Forwarded-Proto. A client that sends
// the header over plain HTTP only gets a cookie its browser will not send
// back over plain HTTP.
func requestIsTLS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	// A chain of proxies may list several protocols; the first is the
	// client's.
	proto, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(proto), "https")
}
