package labels

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	require.NoError(t, Validate(nil))
	require.NoError(t, Validate(map[string]string{"server": "db1", "example.com/tier": "gold", "a_b-c.d": ""}))
	for name, tc := range map[string]struct {
		m    map[string]string
		want string
	}{
		"empty key":     {map[string]string{"": "x"}, `label key ""`},
		"upper key":     {map[string]string{"Tier": "x"}, `label key "Tier"`},
		"space in key":  {map[string]string{"a b": "x"}, `label key "a b"`},
		"long key":      {map[string]string{strings.Repeat("k", 64): "x"}, "label key"},
		"long value":    {map[string]string{"tier": strings.Repeat("v", 256)}, `label "tier": 256 characters`},
		"nul in value":  {map[string]string{"tier": "a\x00b"}, `label "tier"`},
		"bad utf8":      {map[string]string{"tier": "\xff"}, `label "tier"`},
		"too many keys": {tooMany(), "33 labels, at most 32"},
	} {
		err := Validate(tc.m)
		require.ErrorIs(t, err, ErrInvalid, name)
		require.ErrorContains(t, err, tc.want, name)
	}
	// 63-character keys and 255-character values (in runes) are fine.
	require.NoError(t, Validate(map[string]string{strings.Repeat("k", 63): strings.Repeat("é", 255)}))
}

func tooMany() map[string]string {
	m := map[string]string{}
	for i := range 33 {
		m[string(rune('a'+i%26))+strings.Repeat("x", i/26+1)] = "v"
	}
	return m
}

func TestParseArgs(t *testing.T) {
	t.Parallel()
	p, err := ParseArgs([]string{"tier=gold", "canary=", "old-"})
	require.NoError(t, err)
	require.Equal(t, "gold", *p["tier"])
	require.Empty(t, *p["canary"])
	require.Nil(t, p["old"])
	require.Contains(t, p, "old")
	require.Equal(t, map[string]string{"tier": "gold", "canary": "", "keep": "1"},
		Merge(map[string]string{"old": "x", "keep": "1"}, p))

	for _, bad := range [][]string{{"tier"}, {"Tier=x"}, {"=x"}, {"-"}, {"a=1", "a-"}} {
		_, err := ParseArgs(bad)
		require.ErrorIs(t, err, ErrInvalid, "%q", bad)
	}
}

func TestParseSelector(t *testing.T) {
	t.Parallel()
	labels := map[string]string{"tier": "gold", "server": "db1", "canary": ""}
	for sel, want := range map[string]bool{
		"":                          true,
		"tier=gold":                 true,
		"tier==gold":                true,
		" tier = gold , server=db1": true,
		"tier=silver":               false,
		"tier!=silver":              true,
		"tier!=gold":                false,
		"region!=eu":                true, // no such label: != holds, as in kubectl
		"canary":                    true,
		"canary=":                   true,
		"region":                    false,
		"!region":                   true,
		"!canary":                   false,
		"tier=gold,!canary":         false,
		"example.com/x":             false,
	} {
		s, err := Parse(sel)
		require.NoError(t, err, sel)
		require.Equal(t, want, s.Matches(labels), sel)
		again, err := Parse(s.String())
		require.NoError(t, err)
		require.Equal(t, s, again)
	}
	for _, bad := range []string{",", "tier=gold,", "Tier=x", "a=b=c", "a!b", "!", "=x", "a!=b!", "!a=b", strings.Repeat("a", 5000)} {
		_, err := Parse(bad)
		require.ErrorIs(t, err, ErrInvalid, "%q", bad)
	}
}

func TestSelectorSQL(t *testing.T) {
	t.Parallel()
	s, err := Parse("tier=gold,server=db1,canary,!old,region!=eu")
	require.NoError(t, err)
	sql, args := s.SQL("labels", 3)
	require.Equal(t, `(labels @> $3::jsonb AND labels ? $4::text AND NOT (labels ? $5::text) AND NOT (labels @> $6::jsonb))`, sql)
	require.Equal(t, []any{`{"server":"db1","tier":"gold"}`, "canary", "old", `{"region":"eu"}`}, args)

	sql, args = Selector{}.SQL("labels", 1)
	require.Equal(t, "true", sql)
	require.Empty(t, args)
	s, _ = Parse("tier=a,tier=b")
	sql, _ = s.SQL("labels", 1)
	require.Equal(t, "false", sql)
}

// FuzzParse: Parse never panics, accepts only valid keys and values, and a
// parsed selector prints as one that parses back the same.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "tier=gold", "a!=b,c,!d", "x==y", "!", "a=b=c", " k = v ", "example.com/a=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalid)
			return
		}
		for _, r := range sel.Requirements() {
			require.NoError(t, ValidateKey(r.Key))
			require.NoError(t, ValidateValue(r.Key, r.Value))
		}
		again, err := Parse(sel.String())
		require.NoError(t, err, "String() = %q", sel.String())
		require.Equal(t, sel, again)
		_, _ = sel.SQL("labels", 1)
		_ = sel.Matches(map[string]string{"a": "b"})
	})
}
