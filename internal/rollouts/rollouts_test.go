package rollouts

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWaveEnds(t *testing.T) {
	t.Parallel()
	ws := func(s string) []WaveSize {
		w, err := ParseWaves(s)
		require.NoError(t, err)
		return w
	}
	for _, tc := range []struct {
		total, canaries int64
		spec            string
		want            []int64
	}{
		{1000, 0, "", []int64{10, 1000}},       // 1%
		{10, 0, "", []int64{1, 10}},            // at least 1
		{100_000, 0, "", []int64{50, 100_000}}, // at most 50
		{1, 0, "", []int64{1}},
		{40, 0, "100%", []int64{40}},
		{1000, 0, "5,10%,100%", []int64{5, 100, 1000}},
		{1000, 0, "5,10%", []int64{5, 100, 1000}}, // 100% implied
		{12, 3, "", []int64{3, 12}},               // the 1% wave is within the canaries
		{1000, 3, "", []int64{3, 10, 1000}},
		{1000, 20, "10,50%", []int64{20, 500, 1000}},
		{5, 0, "10,20", []int64{5}},
		{0, 0, "", []int64{0}},
	} {
		require.Equal(t, tc.want, WaveEnds(tc.total, tc.canaries, ws(tc.spec)), "%d/%d %q", tc.total, tc.canaries, tc.spec)
	}
}

func TestThreshold(t *testing.T) {
	t.Parallel()
	require.Zero(t, threshold(0.05, 3), "a canary wave under 20 halts on its first failure")
	require.Equal(t, int64(1), threshold(0.05, 20))
	require.Equal(t, int64(4), threshold(0.10, 40))
	require.Equal(t, int64(40), threshold(1, 40), "100% never halts")
	require.Zero(t, threshold(-1, 40))
}

func TestParseWavesAndRate(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"0", "-1", "x", "5,", "0%", "101%", "1.5", "NaN%", "5,,6"} {
		_, err := ParseWaves(bad)
		require.ErrorIs(t, err, ErrInvalid, bad)
	}
	for in, want := range map[string]float64{"5%": 0.05, "0.1": 0.1, "100%": 1, "0": 0, " 2.5 % ": 0.025} {
		got, err := ParseRate(in)
		require.NoError(t, err, in)
		require.InDelta(t, want, got, 1e-12, in)
	}
	for _, bad := range []string{"", "x", "101%", "-1%", "1.5", "NaN"} {
		_, err := ParseRate(bad)
		require.ErrorIs(t, err, ErrInvalid, bad)
	}
}

// FuzzParseWaves: ParseWaves never panics, accepts only positive sizes,
// round-trips through FormatWaves, and WaveEnds of what it accepts is
// strictly increasing and ends at the total.
func FuzzParseWaves(f *testing.F) {
	for _, s := range []string{"", "5,10%,100%", "100%", "1", "0.5%", "x", "5,,6"} {
		f.Add(s, int64(1000), int64(3))
	}
	f.Fuzz(func(t *testing.T, s string, total, canaries int64) {
		ws, err := ParseWaves(s)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalid)
			return
		}
		again, err := ParseWaves(FormatWaves(ws))
		require.NoError(t, err)
		require.Equal(t, ws, again)
		total = max(0, min(total, 1<<40))
		canaries = max(0, min(canaries, total))
		ends := WaveEnds(total, canaries, ws)
		require.Equal(t, total, ends[len(ends)-1])
		for i := 1; i < len(ends); i++ {
			require.Greater(t, ends[i], ends[i-1])
		}
	})
}
