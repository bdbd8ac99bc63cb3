package history

import (
	"testing"
	"time"
)

// FuzzParseCursor: the cursor is outside input (the admin API's ?cursor=,
// the CLI). parseCursor never panics, accepts only what formatCursor writes,
// and what it accepts formats back to itself.
func FuzzParseCursor(f *testing.F) {
	for _, s := range []string{"", "1.1", "1732500000000000.42", "0.1", "x", "1.", ".1", "-1.1", "01.1",
		"9224318015999999.9223372036854775807", "9224318016000000.1", "1e3.1", "+1.1", "1.1.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseCursor(s)
		if err != nil {
			return
		}
		if got := formatCursor(c); got != s {
			t.Fatalf("parseCursor(%q) formats back to %q", s, got)
		}
	})
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []pageCursor{
		{startedAt: time.Now().Truncate(time.Microsecond), id: 1},
		{startedAt: time.UnixMicro(0), id: 1<<63 - 1},
	} {
		got, err := parseCursor(formatCursor(c))
		if err != nil || !got.startedAt.Equal(c.startedAt) || got.id != c.id {
			t.Fatalf("round trip of %+v: %+v, %v", c, got, err)
		}
	}
}
