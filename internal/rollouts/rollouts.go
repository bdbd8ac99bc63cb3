// Package rollouts moves a fleet to a target version in waves and halts a
// broken release: the storage of rollouts in the control plane
// (tenantmigrate.rollouts and rollout_tenants, shared by every instance and
// process), the accounting of each tenant run (Store.Admit before, Store.Done
// after: internal/run calls them for every trigger), the wave and halt rules
// (Store.Advance), and the feeding of the queue in bounded batches (Feeder).
//
// A rollout is created for target L by the first caller of Store.Ensure that
// finds tenants behind L (the full_fleet scan, migrate --all, the admin API).
// Its tenants are those behind at creation, ordered once: the canary
// selector's first, as their own wave, then by a stable hash of the id. The
// waves are cumulative sizes of that order. A wave starts when the previous
// one finished (every tenant COMPLETED or FAILED, i.e. FAILED_STALE) and
// passed, and fails as soon as its failures exceed floor(rate x size): the
// rollout halts then, and from then on Admit refuses every run at L.
package rollouts

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// State is a rollout's state.
type State string

// States of a rollout. RUNNING and HALTED are active: at most one rollout is.
const (
	StateRunning    State = "RUNNING"
	StateHalted     State = "HALTED"
	StateCompleted  State = "COMPLETED"
	StateAborted    State = "ABORTED"
	StateSuperseded State = "SUPERSEDED"
)

// Active reports whether the state is RUNNING or HALTED.
func (s State) Active() bool { return s == StateRunning || s == StateHalted }

// Defaults of Options.
const (
	// DefaultHaltFailureRate: a wave fails once more than 5% of its tenants
	// failed (rounded down: in a wave under 20 tenants, the first failure).
	DefaultHaltFailureRate = 0.05
	// DefaultFirstWavePercent, DefaultFirstWaveMin and DefaultFirstWaveMax
	// make the default first wave: 1% of the tenants behind, at least 1, at
	// most 50; the rest is the second wave.
	DefaultFirstWavePercent = 1.0
	DefaultFirstWaveMin     = 1
	DefaultFirstWaveMax     = 50
)

// ErrNotFound is returned for an unknown rollout id.
var ErrNotFound = errors.New("rollout not found")

// ErrInvalid is wrapped by the errors of ParseWaves, ParseRate and of the
// Store methods given bad input (resuming a rollout that is not halted, say).
var ErrInvalid = errors.New("invalid")

// HaltedError is returned by Store.Admit, and so by every run of a tenant
// at the target of a halted rollout: no run starts until the rollout is
// resumed or aborted.
type HaltedError struct {
	RolloutID     int64
	TargetVersion int64
	Reason        string
}

func (e *HaltedError) Error() string {
	return fmt.Sprintf("rollout %d to version %d is halted (%s): no tenant is migrated to it until it is resumed or aborted", e.RolloutID, e.TargetVersion, e.Reason)
}

// Rollout is a rollout with its progress.
type Rollout struct {
	ID             int64
	TargetVersion  int64
	State          State
	HaltReason     string
	CanarySelector string
	// WaveEnds are the cumulative wave sizes.
	WaveEnds        []int64
	HaltFailureRate float64
	WavePause       time.Duration
	CurrentWave     int
	Total           int64
	StartedAt       time.Time
	FinishedAt      *time.Time

	// Counts over all waves; Pending counts PENDING and QUEUED tenants.
	Completed, Failed, Pending, Removed int64
	Waves                               []Wave
	// AvgDuration is the mean duration of the rollout's completed runs.
	AvgDuration time.Duration
	// ETA is when the rollout should finish; nil when it is not running,
	// has nothing pending or nothing to estimate from. ETABasis says how it
	// was estimated (see estimate in read.go and the README's Rollouts).
	ETA *time.Time
	// ETABasis is ETAFromHistory or ETAFromPace; "" without an ETA.
	ETABasis string
	// ETAPerTenant and ETAParallelism are what an ETAFromHistory is made
	// of: the p50 of the recent tenant runs in the run history, and the
	// parallelism measured in the rollout (tenant-seconds of run per second
	// of its latest wave with finished tenants). Zero otherwise.
	ETAPerTenant   time.Duration
	ETAParallelism float64
	// FirstErrors are up to five errors of the failed tenants of the
	// current wave (tenant id: error), the first first.
	FirstErrors []TenantError

	// waveDoneAt is when the current wave's last tenant finished (the wave
	// pause runs from then); nil while it runs.
	waveDoneAt *time.Time
}

// TenantError is the failure of one tenant in a rollout.
type TenantError struct {
	TenantID      string
	FailedVersion int64 // 0 when unknown
	Error         string
}

// Wave is the progress of one wave.
type Wave struct {
	Size, Completed, Failed, Pending, Removed int64
	// State: PENDING (not started), RUNNING, PASSED, FAILED (its failures
	// exceed the rate; the rollout halted on it).
	State string
	// ETA is when the wave should end, on the rollout's ETABasis; nil for a
	// wave with nothing pending or when the rollout has no ETA.
	ETA *time.Time
}

// threshold is how many failed tenants a wave of size may have and pass.
func threshold(rate float64, size int64) int64 {
	if rate < 0 {
		return 0
	}
	return int64(math.Floor(rate*float64(size) + 1e-9))
}

// WaveSize is one term of a wave specification: a count of tenants or a
// percentage of the tenants behind at the start, cumulative.
type WaveSize struct {
	Count   int64
	Percent float64 // used when Count is 0
}

// ParseWaves parses cumulative wave sizes, comma-separated counts and
// percentages: "5,10%,100%". They must grow; a final 100% is implied. ""
// is nil: the default waves. The error wraps ErrInvalid.
func ParseWaves(s string) ([]WaveSize, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if len(s) > 1000 {
		return nil, fmt.Errorf("%w waves: longer than 1000 characters", ErrInvalid)
	}
	var out []WaveSize
	for term := range strings.SplitSeq(s, ",") {
		term = strings.TrimSpace(term)
		bad := func(why string) error {
			return fmt.Errorf("%w waves term %q: %s (want cumulative counts or percentages, e.g. 5,10%%,100%%)", ErrInvalid, term, why)
		}
		if p, ok := strings.CutSuffix(term, "%"); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
			if err != nil || math.IsNaN(f) || f <= 0 || f > 100 {
				return nil, bad("a percentage must be above 0 and at most 100")
			}
			out = append(out, WaveSize{Percent: f})
			continue
		}
		n, err := strconv.ParseInt(term, 10, 64)
		if err != nil || n <= 0 {
			return nil, bad("a count must be a positive integer")
		}
		out = append(out, WaveSize{Count: n})
	}
	if len(out) > 100 {
		return nil, fmt.Errorf("%w waves: %d waves, at most 100", ErrInvalid, len(out))
	}
	return out, nil
}

// FormatWaves is the inverse of ParseWaves.
func FormatWaves(ws []WaveSize) string {
	parts := make([]string, len(ws))
	for i, w := range ws {
		if w.Count > 0 {
			parts[i] = strconv.FormatInt(w.Count, 10)
		} else {
			parts[i] = strconv.FormatFloat(w.Percent, 'f', -1, 64) + "%"
		}
	}
	return strings.Join(parts, ",")
}

// ParseRate parses a failure rate: "5%" or a fraction "0.05", from 0 to
// 100%. The error wraps ErrInvalid.
func ParseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	var (
		f   float64
		err error
	)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err = strconv.ParseFloat(strings.TrimSpace(p), 64)
		f /= 100
	} else {
		f, err = strconv.ParseFloat(s, 64)
	}
	if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
		return 0, fmt.Errorf("%w failure rate %q: want a percentage from 0%% to 100%% (e.g. 5%%) or a fraction from 0 to 1", ErrInvalid, s)
	}
	return f, nil
}

// WaveEnds computes the cumulative ends of the waves of total tenants, of
// which canaries come first as their own wave, from the spec (nil: the
// default first wave, then the rest). Ends are strictly increasing and the
// last is total; a spec end at or below the previous one is dropped.
func WaveEnds(total, canaries int64, spec []WaveSize) []int64 {
	if total <= 0 {
		return []int64{0}
	}
	var ends []int64
	if canaries > 0 {
		ends = append(ends, min(canaries, total))
	}
	if spec == nil {
		first := int64(math.Ceil(float64(total) * DefaultFirstWavePercent / 100))
		first = max(DefaultFirstWaveMin, min(first, DefaultFirstWaveMax))
		spec = []WaveSize{{Count: first}}
	}
	for _, w := range spec {
		end := w.Count
		if end == 0 {
			end = int64(math.Ceil(float64(total) * w.Percent / 100))
		}
		end = min(end, total)
		if len(ends) == 0 || end > ends[len(ends)-1] {
			ends = append(ends, end)
		}
	}
	if len(ends) == 0 || ends[len(ends)-1] < total {
		ends = append(ends, total)
	}
	return ends
}
