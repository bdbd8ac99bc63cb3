package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tenantmigrate/tenantmigrate"
	"github.com/tenantmigrate/tenantmigrate/internal/httpapi"
)

// rolloutOpts are the flags that shape a rollout serve or migrate --all
// creates.
type rolloutOpts struct {
	waves           string
	canarySelector  string
	haltFailureRate string
	wavePause       time.Duration
}

// addRolloutFlags adds the flags of rolloutOpts to f.
func addRolloutFlags(f *pflag.FlagSet, o *rolloutOpts) {
	f.StringVar(&o.waves, "waves", "", "cumulative wave sizes of a new rollout, counts or percentages of the tenants behind, e.g. 5,10%,100% (default: 1% of them, at least 1 and at most 50, then the rest; 100% is one wave)")
	bindEnv(f, "waves", "WAVES")
	f.StringVar(&o.canarySelector, "canary-selector", "", "label selector of the tenants a new rollout runs first, as their own wave, e.g. canary=true")
	bindEnv(f, "canary-selector", "CANARY_SELECTOR")
	f.StringVar(&o.haltFailureRate, "halt-failure-rate", "5%", "a new rollout halts as soon as a wave's FAILED_STALE tenants exceed this share of it, rounded down (100% never halts)")
	bindEnv(f, "halt-failure-rate", "HALT_FAILURE_RATE")
	f.DurationVar(&o.wavePause, "wave-pause", 0, "wait between a wave passing and the next one starting")
	bindEnv(f, "wave-pause", "WAVE_PAUSE")
}

// apply validates the flags and sets cfg.Rollout.
func (o *rolloutOpts) apply(cfg *tenantmigrate.Config) error {
	if err := tenantmigrate.ValidateWaves(o.waves); err != nil {
		return usageErr("--waves (WAVES): %v", err)
	}
	if err := tenantmigrate.ValidateSelector(o.canarySelector); err != nil {
		return usageErr("--canary-selector (CANARY_SELECTOR): %v", err)
	}
	rate, err := tenantmigrate.ParseFailureRate(o.haltFailureRate)
	if err != nil {
		return usageErr("--halt-failure-rate (HALT_FAILURE_RATE): %v", err)
	}
	if o.wavePause < 0 {
		return usageErr("--wave-pause (WAVE_PAUSE) must not be negative")
	}
	if rate == 0 {
		rate = -1 // 0%: the Config's zero means the default
	}
	cfg.Rollout = tenantmigrate.RolloutConfig{Waves: o.waves, CanarySelector: o.canarySelector, HaltFailureRate: rate, WavePause: o.wavePause}
	return nil
}

// haltedErr is the exit error of a run that a halted rollout stopped.
func haltedErr(res fleetResult) error {
	r := res.Rollout
	var b strings.Builder
	fmt.Fprintf(&b, "rollout %d to version %d halted: %s", r.ID, r.TargetVersion, r.HaltReason)
	for _, e := range r.FirstErrors {
		fmt.Fprintf(&b, "\n  %s", e.TenantID)
		if e.FailedVersion > 0 {
			fmt.Fprintf(&b, " (version %d)", e.FailedVersion)
		}
		fmt.Fprintf(&b, ": %s", oneLine(e.Error, 300))
	}
	fmt.Fprintf(&b, "\nno tenant is migrated to version %d until the rollout is resumed after a fix (tenantmigrate rollout resume %d) or aborted (tenantmigrate rollout abort %d)", r.TargetVersion, r.ID, r.ID)
	return failedErr(errors.New(b.String()))
}

func newRolloutCmd(g *globalOpts) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "List, show, resume and abort rollouts",
		Long: `A rollout moves the fleet to a release's latest version in waves: the
canary selector's tenants first, then the rest in stable hash order, in the
cumulative sizes of --waves. It halts as soon as a wave's FAILED_STALE tenants
exceed --halt-failure-rate of it; from then on no tenant starts a run at that
version anywhere (serve, migrate, the admin API) until it is resumed or
aborted. serve's full_fleet scan and migrate --all create it.`,
		Example: `  tenantmigrate rollout list
  tenantmigrate rollout show 7 --json
  tenantmigrate rollout resume 7   # after fixing the migration or the tenants' data
  tenantmigrate rollout abort 7`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newRolloutListCmd(g), newRolloutShowCmd(g, "show", "Show one rollout with its waves and first errors"),
		newRolloutActionCmd(g, "resume"), newRolloutActionCmd(g, "abort"))
	return cmd
}

func newRolloutListCmd(g *globalOpts) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the rollouts, newest first",
		Example: "  tenantmigrate rollout list\n  tenantmigrate rollout list --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			orch, err := openInspectOrchestrator(cmd, g, false, nil)
			if err != nil {
				return err
			}
			defer orch.Close()
			rs, err := orch.ListRollouts(cmd.Context(), 50)
			if err != nil {
				return failedErr(err)
			}
			if asJSON {
				out := make([]httpapi.RolloutJSON, len(rs))
				for i, r := range rs {
					out[i] = httpapi.RolloutToJSON(r)
				}
				return writeJSONOut(g.stdout, out)
			}
			if len(rs) == 0 {
				fmt.Fprintln(g.stdout, "(no rollouts yet: serve's full_fleet scan and migrate --all start one)")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tVERSION\tSTATE\tTOTAL\tCOMPLETED\tFAILED\tPENDING\tWAVE\tSTARTED")
			for _, r := range rs {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%d\t%d\t%d/%d\t%s\n", r.ID, r.TargetVersion, r.State, r.Total,
					r.Completed, r.Failed, r.Pending, r.CurrentWave+1, len(r.Waves), timeText(r.StartedAt))
			}
			return tw.Flush()
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func newRolloutShowCmd(g *globalOpts, use, short string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     use + " ID",
		Short:   short,
		Example: "  tenantmigrate rollout show 7\n  tenantmigrate rollout show 7 --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, r, err := onRollout(cmd, g, args[0], (*tenantmigrate.Orchestrator).GetRollout)
			if err != nil {
				return err
			}
			return printRolloutOut(g.stdout, r, asJSON)
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

func newRolloutActionCmd(g *globalOpts, verb string) *cobra.Command {
	var asJSON bool
	short := "Clear a rollout's halt: retry the failed tenants of the halted wave and continue"
	long := `resume clears the halt of rollout ID: the failed tenants of the wave it halted
on are tried again, the tenants whose jobs the halt skipped are queued again,
and the waves go on. Fix the cause first: the migration file (one that never
succeeded anywhere may be edited) or the tenants' data.`
	if verb == "abort" {
		short = "Stop a rollout for good; its tenants keep their state"
		long = `abort stops rollout ID for good: no more waves are fed, nothing is refused any
more, and every tenant keeps the state it has. A rollout to a newer version
supersedes it anyway.`
	}
	cmd := &cobra.Command{
		Use:     verb + " ID",
		Short:   short,
		Long:    long,
		Example: "  tenantmigrate rollout " + verb + " 7",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			act := (*tenantmigrate.Orchestrator).ResumeRollout
			if verb == "abort" {
				act = (*tenantmigrate.Orchestrator).AbortRollout
			}
			id, r, err := onRollout(cmd, g, args[0], act)
			if err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(g.stdout, "rollout %d: %s\n", id, map[string]string{"abort": "aborted", "resume": "resumed"}[verb])
			}
			return printRolloutOut(g.stdout, r, asJSON)
		},
	}
	addJSONFlag(cmd, &asJSON)
	return cmd
}

// onRollout runs act on the rollout whose id is arg, with an inspect
// Orchestrator, and returns the id and what act returns; its error is the
// command's.
func onRollout(cmd *cobra.Command, g *globalOpts, arg string,
	act func(*tenantmigrate.Orchestrator, context.Context, int64) (*tenantmigrate.Rollout, error),
) (int64, *tenantmigrate.Rollout, error) {
	id, err := rolloutID(arg)
	if err != nil {
		return 0, nil, err
	}
	orch, err := openInspectOrchestrator(cmd, g, false, nil)
	if err != nil {
		return 0, nil, err
	}
	defer orch.Close()
	r, err := act(orch, cmd.Context(), id)
	if err != nil {
		return 0, nil, rolloutErr(id, err)
	}
	return id, r, nil
}

func rolloutID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usageErr("rollout id %q: want a positive integer (see tenantmigrate rollout list)", s)
	}
	return id, nil
}

func rolloutErr(id int64, err error) error {
	if errors.Is(err, tenantmigrate.ErrRolloutNotFound) {
		return failedErr(fmt.Errorf("no rollout %d (see tenantmigrate rollout list)", id))
	}
	return failedErr(err)
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printRolloutOut(w io.Writer, r *tenantmigrate.Rollout, asJSON bool) error {
	if asJSON {
		return writeJSONOut(w, httpapi.RolloutToJSON(r))
	}
	printRollout(w, r)
	return nil
}

// printRollout prints a rollout with a line per wave.
func printRollout(w io.Writer, r *tenantmigrate.Rollout) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "rollout:\t%d to version %d\n", r.ID, r.TargetVersion)
	fmt.Fprintf(tw, "state:\t%s\n", r.State)
	if r.HaltReason != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", oneLine(r.HaltReason, 500))
	}
	fmt.Fprintf(tw, "tenants:\t%d: %d completed, %d failed, %d pending", r.Total, r.Completed, r.Failed, r.Pending)
	if r.Removed > 0 {
		fmt.Fprintf(tw, ", %d removed", r.Removed)
	}
	fmt.Fprintln(tw)
	if r.CanarySelector != "" {
		fmt.Fprintf(tw, "canaries:\t%s\n", r.CanarySelector)
	}
	fmt.Fprintf(tw, "halts at:\tmore than %g%% of a wave failed\n", r.HaltFailureRate*100)
	fmt.Fprintf(tw, "started:\t%s\n", timeText(r.StartedAt))
	if r.FinishedAt != nil {
		fmt.Fprintf(tw, "finished:\t%s\n", timeText(*r.FinishedAt))
	}
	if r.ETA != nil {
		basis := "at the pace so far"
		if r.ETABasis == tenantmigrate.RolloutETAFromHistory {
			basis = fmt.Sprintf("run history p50 %s per tenant, %.1f at once", durationText(r.ETAPerTenant), r.ETAParallelism)
		}
		fmt.Fprintf(tw, "eta:\t%s (%s; %s per tenant on average)\n", timeText(*r.ETA), basis, durationText(r.AvgDuration))
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(tw, "WAVE\tSIZE\tCOMPLETED\tFAILED\tPENDING\tSTATE")
	for i, wv := range r.Waves {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\n", i+1, wv.Size, wv.Completed, wv.Failed, wv.Pending, wv.State)
	}
	_ = tw.Flush()
	if len(r.FirstErrors) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "first errors:")
		for _, e := range r.FirstErrors {
			fmt.Fprintf(w, "  %s: %s\n", e.TenantID, oneLine(e.Error, 300))
		}
	}
}
