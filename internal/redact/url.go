package redact

import (
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// URL returns connString for display, with its passwords masked: "xxxxx"
// (another mask when a password contains an 'x') in place of the password of
// a URL's user info and the value of every query parameter or keyword whose
// name mentions "pass" (password, sslpassword), and of every word of a
// keyword=value string that is not keyword=value. It does not rely on
// connString being well formed: where parsers disagree, it masks the widest
// reading, and it also masks a password=... anywhere in its text. The
// result is for messages and logs, not for connecting. Unlike Secrets, it
// does not call pgx (which reads files such as ~/.pgpass).
func URL(connString string) string {
	// Masking is by position only: masking the text of every reading of the
	// password everywhere, as Error does, would also mask what a reading of
	// a malformed string shows as something else, such as the "p" of
	// postgres://u:p@ss@host or the "w" of password=p w.
	mask := maskFor(lexicalSecrets(connString).sorted())
	var out string
	if looksLikeURL(connString) {
		out = displayURL(connString, mask)
	} else {
		out = displayKeywordValue(connString, mask)
	}
	// A password=... that the structure does not reach: in a value
	// (application_name='a password=pw), or after a second '?' of a URL.
	return maskAssignments(out, mask)
}

// looksLikeURL reports whether connString is a URL of any scheme: it has a
// "://" before its first '='.
func looksLikeURL(connString string) bool {
	i := strings.Index(connString, "://")
	return i >= 0 && !strings.Contains(connString[:i], "=")
}

// displayURL masks the passwords of a URL.
func displayURL(s, mask string) string {
	scheme, rest, _ := strings.Cut(s, "://")
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")

	// libpq and pgx end the user info at the first '@' before any '/';
	// net/url at the last '@' before the first '/', '?' or '#'. Masking up to
	// the last '@' before the first '/' covers both readings.
	head := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		head = rest[:i]
	}
	userinfo := ""
	if i := strings.LastIndexByte(head, '@'); i >= 0 {
		user, _, hasPassword := strings.Cut(rest[:i], ":")
		userinfo = user + "@"
		if hasPassword {
			userinfo = user + ":" + mask + "@"
		}
		rest = rest[i+1:]
	}
	// An '@' left after the host means a malformed URL, for example with an
	// unencoded '/' in the password (postgres://u:pa/ss@host): drop all of
	// the user info.
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		userinfo = mask + "@"
		rest = rest[i+1:]
	}
	b.WriteString(userinfo)

	path, query, hasQuery := strings.Cut(rest, "?")
	b.WriteString(path)
	if !hasQuery {
		return b.String()
	}
	b.WriteByte('?')
	for i, pair := range strings.Split(query, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		key, _, hasValue := strings.Cut(pair, "=")
		if hasValue && isPasswordKey(key) {
			b.WriteString(key + "=" + mask)
			continue
		}
		b.WriteString(pair)
	}
	return b.String()
}

// rewriteParseConfigError replaces, in msg, the text of pce (as pgx renders
// it, "cannot parse `<best-effort masked string>`: <what failed> (<cause>)")
// by the same text with URL's display of the connection string. It returns
// msg unchanged when pce's text is not in msg or not of that shape; the
// caller masks the secrets in either case.
func rewriteParseConfigError(msg string, pce *pgconn.ParseConfigError) string {
	const prefix = "cannot parse `"
	text := pce.Error()
	rest, ok := strings.CutPrefix(text, prefix)
	if !ok || !strings.Contains(msg, text) {
		return msg
	}
	if cause := pce.Unwrap(); cause != nil {
		if rest, ok = strings.CutSuffix(rest, " ("+cause.Error()+")"); !ok {
			return msg
		}
	}
	// What failed is one of pgx's fixed messages, without "`: "; the masked
	// string may hold it.
	i := strings.LastIndex(rest, "`: ")
	if i < 0 {
		return msg
	}
	tail := text[len(prefix)+i:]
	return strings.ReplaceAll(msg, text, prefix+URL(pce.ConnString)+tail)
}
