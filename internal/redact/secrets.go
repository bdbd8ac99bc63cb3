package redact

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// secretSet collects secrets with the forms they may show in.
type secretSet struct{ list []string }

// add adds v and its decoded and encoded forms: without surrounding quotes
// or spaces, with libpq's backslash escapes and percent-encoding (lenient, as
// pgx's masking reads it, and with '+' as a space) removed, then each of
// those quoted by %q and percent-encoded. Forms that are empty or only
// whitespace are left out.
func (s *secretSet) add(v string) {
	forms := []string{v}
	for _, decode := range []func(string) string{strings.TrimSpace, unquote, unescapeKeywordValue, percentDecodeLenient, queryUnescape} {
		for _, f := range forms {
			forms = appendNew(forms, decode(f))
		}
	}
	for _, f := range forms {
		forms = appendNew(forms, goQuoted(f))
		forms = appendNew(forms, url.QueryEscape(f))
		forms = appendNew(forms, url.PathEscape(f))
	}
	for _, f := range forms {
		if strings.TrimSpace(f) != "" {
			s.list = appendNew(s.list, f)
		}
	}
}

// sorted returns the distinct secrets, longest first.
func (s *secretSet) sorted() []string { return sortSecrets(s.list) }

// lexicalSecrets returns the secrets of connString read from its text
// alone, with their forms: everything but pgx's parsed password.
func lexicalSecrets(connString string) *secretSet {
	var raw []string
	if strings.Contains(connString, "://") {
		raw = append(raw, userinfoPasswords(connString)...)
	}
	raw = append(raw, assignedPasswords(connString)...)
	if !isPgxURL(connString) {
		raw = append(raw, keywordValueSecrets(connString)...)
	}
	var set secretSet
	for _, v := range raw {
		set.add(v)
	}
	return &set
}

// isPgxURL reports whether pgx reads connString as a URL; it reads any other
// string as keyword=value.
func isPgxURL(connString string) bool {
	return strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://")
}

// userinfoPasswords returns the password of the user info of a URL under
// each reading: libpq and pgx end the user info at the first '@' before any
// '/'; net/url at the last '@' before the first '/', '?' or '#'; and an
// unencoded '/', '?' or '#' in a password strands it before the last '@'.
// The password runs from the first ':' of the user info.
func userinfoPasswords(connString string) []string {
	_, rest, _ := strings.Cut(connString, "://")
	var ends []int
	if i := strings.IndexAny(rest, "@/"); i >= 0 && rest[i] == '@' {
		ends = append(ends, i)
	}
	head := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		head = rest[:i]
	}
	ends = append(ends, strings.LastIndexByte(head, '@'), strings.LastIndexByte(rest, '@'))
	var out []string
	for _, end := range ends {
		if end < 0 {
			continue
		}
		if _, pw, ok := strings.Cut(rest[:end], ":"); ok {
			out = append(out, pw)
		}
	}
	return out
}

// userinfoFragments returns the parts of the widest reading of a URL's
// password between the characters that end a URL component: for a URL that
// pgx cannot parse, because pgx may then read them as a host, a port, a
// database or a query and quote them in its error (the " S3CR3T" of
// "unexpected spaces found in " S3CR3T@host"" from postgres://u:p@ S3CR3T@host).
func userinfoFragments(connString string) []string {
	_, rest, _ := strings.Cut(connString, "://")
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return nil
	}
	_, pw, ok := strings.Cut(rest[:at], ":")
	if !ok {
		return nil
	}
	return strings.FieldsFunc(pw, func(r rune) bool { return strings.ContainsRune("@:/?#,&=", r) })
}

// assignedPasswords returns the value of every assignment to a password
// key anywhere in s (see passwordAssignments).
func assignedPasswords(s string) []string {
	var out []string
	for _, sp := range passwordAssignments(s) {
		out = append(out, s[sp[0]:sp[1]])
	}
	return out
}

// passwordAssignments returns the span of the value of every assignment to a
// password key anywhere in s: a run of letters, digits, '_' and '%' whose
// decoded form mentions "pass" (password, sslpassword, p%61ssword), then '='
// with or without spaces around it. That covers URL query parameters and
// keyword=value pairs, and also a pair that libpq would never reach, such as
// one in an unterminated quote. In a URL a value runs to the next '&', in a
// keyword=value string it is read as libpq reads it (see valueEnd).
func passwordAssignments(s string) [][2]int {
	isURL := looksLikeURL(s)
	var out [][2]int
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			continue
		}
		keyEnd := i
		for keyEnd > 0 && isSpace(s[keyEnd-1]) {
			keyEnd--
		}
		keyStart := keyEnd
		for keyStart > 0 && isKeyByte(s[keyStart-1]) {
			keyStart--
		}
		if !isPasswordKey(s[keyStart:keyEnd]) {
			continue
		}
		if isURL {
			end := len(s)
			if amp := strings.IndexByte(s[i+1:], '&'); amp >= 0 {
				end = i + 1 + amp
			}
			out = append(out, [2]int{i + 1, end})
			continue
		}
		v := skipSpace(s, i+1)
		out = append(out, [2]int{v, valueEnd(s, v)})
	}
	return out
}

// maskAssignments replaces the value of every assignment to a password key
// in s (see passwordAssignments) by mask.
func maskAssignments(s, mask string) string {
	var b strings.Builder
	last := 0
	for _, sp := range passwordAssignments(s) {
		if sp[0] < last {
			continue // inside a value masked already
		}
		b.WriteString(s[last:sp[0]])
		b.WriteString(mask)
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// keywordValueSecrets returns what of a keyword=value string may be a
// password: the value of each password key, widened over the words after it
// that are not keyword=value (password=s3 cr3t, where libpq reads "s3" and
// then fails on "cr3t"), and every such word: libpq cannot read it, so it is
// a typo or a password out of place.
func keywordValueSecrets(s string) []string {
	var out []string
	toks := scanKeywordValue(s)
	for i, t := range toks {
		if !t.pair {
			out = append(out, s[t.start:t.end])
			continue
		}
		if !isPasswordKey(t.key) {
			continue
		}
		out = append(out, s[t.valStart:t.end])
		end := t.end
		for _, w := range toks[i+1:] {
			if w.pair {
				break
			}
			end = w.end
		}
		if end > t.end {
			out = append(out, s[t.valStart:end])
		}
	}
	return out
}

// isPasswordKey reports whether a raw key names a password, in any case or
// percent-encoding: any key that mentions "pass" (password, sslpassword,
// and passfile, whose path is no one's business either).
func isPasswordKey(raw string) bool {
	return strings.Contains(strings.ToLower(percentDecodeLenient(raw)), "pass")
}

func isKeyByte(c byte) bool {
	return c == '_' || c == '%' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// unquote removes one leading and one trailing quote, single or double.
func unquote(s string) string {
	if len(s) > 0 && (s[0] == '\'' || s[0] == '"') {
		s = s[1:]
	}
	if len(s) > 0 && (s[len(s)-1] == '\'' || s[len(s)-1] == '"') {
		s = s[:len(s)-1]
	}
	return s
}

// unescapeKeywordValue removes libpq's backslash escapes, as pgx does.
func unescapeKeywordValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			if i == len(s) {
				break
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// percentDecodeLenient decodes the valid %XX escapes of s and keeps the rest
// as is, as pgx's masking reads keys.
func percentDecodeLenient(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// queryUnescape decodes s as a form value ('+' is a space), or returns it
// as is when it is not one.
func queryUnescape(s string) string {
	if dec, err := url.QueryUnescape(s); err == nil {
		return dec
	}
	return s
}

// goQuoted returns s as %q shows it, without the quotes.
func goQuoted(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
