package redact

import "strings"

// kvToken is one token of a keyword=value string: a pair, or a word libpq
// cannot read as one (it fails on it).
type kvToken struct {
	pair       bool
	key        string // a pair's keyword as written
	start, end int    // the token's span: keyword through value, or the word
	valStart   int    // where a pair's value starts, after '=' and spaces
}

// scanKeywordValue splits s into tokens as libpq reads a conninfo string:
// spaces around '=' are allowed, a value is quoted ('a b', with \' and \\
// escapes) or runs to the next unescaped space. Unlike libpq it never fails:
// an unterminated quote runs to the end of s, and the words before a keyword
// that libpq would stop at ("missing "=" after ...") become word tokens.
func scanKeywordValue(s string) []kvToken {
	var toks []kvToken
	word := func(i int) int {
		j := i
		for j < len(s) && !isSpace(s[j]) {
			j++
		}
		toks = append(toks, kvToken{start: i, end: j, valStart: i})
		return skipSpace(s, j)
	}
	i := skipSpace(s, 0)
	for i < len(s) {
		eq := strings.IndexByte(s[i:], '=')
		if eq < 0 {
			for i < len(s) {
				i = word(i)
			}
			break
		}
		eq += i
		keyEnd := eq
		for keyEnd > i && isSpace(s[keyEnd-1]) {
			keyEnd--
		}
		// Words before the keyword: "a b=c" is the word "a" and the pair b=c.
		for {
			j := i
			for j < keyEnd && !isSpace(s[j]) {
				j++
			}
			if j >= keyEnd {
				break
			}
			i = word(i)
		}
		v := skipSpace(s, eq+1)
		end := valueEnd(s, v)
		toks = append(toks, kvToken{pair: true, key: s[i:keyEnd], start: i, end: end, valStart: v})
		i = skipSpace(s, end)
	}
	return toks
}

// valueEnd returns the end of the keyword value that starts at s[i]: after
// its closing quote, or at the first unescaped space; the end of s for an
// unterminated quote.
func valueEnd(s string, i int) int {
	if i < len(s) && s[i] == '\'' {
		for j := i + 1; j < len(s); j++ {
			switch s[j] {
			case '\\':
				j++
			case '\'':
				return j + 1
			}
		}
		return len(s)
	}
	j := i
	for j < len(s) && !isSpace(s[j]) {
		if s[j] == '\\' {
			j++
		}
		j++
	}
	return min(j, len(s))
}

// displayKeywordValue returns s with the value of each password key, and
// every word that is not keyword=value, replaced by mask. A password's mask
// also stands for the words after it (password=s3 cr3t).
func displayKeywordValue(s, mask string) string {
	var parts []string
	inPassword := false
	for _, t := range scanKeywordValue(s) {
		switch {
		case !t.pair && inPassword:
			continue
		case !t.pair:
			parts = append(parts, mask)
		case isPasswordKey(t.key):
			parts = append(parts, t.key+"="+mask)
		default:
			parts = append(parts, t.key+"="+s[t.valStart:t.end])
		}
		inPassword = t.pair && isPasswordKey(t.key)
	}
	return strings.Join(parts, " ")
}

// isSpace reports whether c is one of the spaces libpq skips in a conninfo
// string.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return false
}

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}
