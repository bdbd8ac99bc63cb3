package instances

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHealthGatesRescue: rescue is allowed only after a whole timeout of
// successful heartbeats: after start, after a failure, and after a gap
// longer than the timeout (the process was stopped).
func TestHealthGatesRescue(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	h := health{timeout: 10 * time.Second}

	require.Equal(t, healthBack, h.record(true, at(0)), "the first heartbeat")
	require.False(t, h.mayRescue(at(0)))
	h.record(true, at(5*time.Second))
	require.False(t, h.mayRescue(at(9*time.Second)))
	h.record(true, at(10*time.Second))
	require.True(t, h.mayRescue(at(10*time.Second)))

	require.Equal(t, healthLost, h.record(false, at(11*time.Second)))
	require.False(t, h.mayRescue(at(11*time.Second)))
	require.Equal(t, healthSame, h.record(false, at(12*time.Second)))
	require.Equal(t, healthBack, h.record(true, at(13*time.Second)))
	require.False(t, h.mayRescue(at(22*time.Second)))
	h.record(true, at(23*time.Second))
	require.True(t, h.mayRescue(at(23*time.Second)))

	// Stopped for 30 seconds: the next heartbeat succeeds, but starts the
	// wait again.
	require.Equal(t, healthSame, h.record(true, at(53*time.Second)))
	require.False(t, h.mayRescue(at(53*time.Second)))
	h.record(true, at(60*time.Second))
	require.True(t, h.mayRescue(at(63*time.Second)))
}
