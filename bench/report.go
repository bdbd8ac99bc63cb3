package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// report is everything one bench run measured.
type report struct {
	Command  string         `json:"command"`
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Machine  machine        `json:"machine"`
	Fleet    *fleetResult   `json:"fleet,omitempty"`
	Scale    []*scaleResult `json:"scale,omitempty"`
	Queue    *queueResult   `json:"queue,omitempty"`
	Profile  *profileResult `json:"profile,omitempty"`
	Locks    *locksResult   `json:"locks,omitempty"`
	// ColdStart: the cold-start runs (coldstart.go).
	ColdStart []*coldResult  `json:"cold_start,omitempty"`
	Schemas   *schemasResult `json:"schemas,omitempty"`
}

// write prints the report as Markdown.
func (r *report) write(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "# tenantmigrate bench, %s\n\n", r.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "`%s`\n\n", r.Command)
	fmt.Fprintf(w, "Machine: %d cores (%s), %s memory, Linux %s, %s. PostgreSQL %s, %s.\n",
		m.Cores, m.CPU, m.Memory, m.Kernel, m.GoVersion, m.PGVersion, m.PGServer)
	keys := make([]string, 0, len(m.PGSettings))
	for k := range m.PGSettings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var kv []string
	for _, k := range keys {
		kv = append(kv, k+"="+m.PGSettings[k])
	}
	fmt.Fprintf(w, "Non-default PostgreSQL settings: %s.\n\n", strings.Join(kv, ", "))

	if f := r.Fleet; f != nil {
		fmt.Fprintf(w, "## Fleet: %d tenant databases, %d migrations\n\n", f.Tenants, f.Migrations)
		fmt.Fprintln(w, "| round | run | concurrency | seconds | client CPU s | server CPU s | CPU busy | other load | retries | peak RSS | load before → after |")
		fmt.Fprintln(w, "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
		for _, run := range f.Runs {
			rss := ""
			if run.MaxRSSMB > 0 {
				rss = fmt.Sprintf("%.0f MB", run.MaxRSSMB)
			}
			fmt.Fprintf(w, "| %d | %s | %s | %.2f | %.2f | %.2f | %.0f%% | %.0f%% | %d | %s | %s → %s |\n",
				run.Round, run.Method, concurrency(run.Concurrency), run.Seconds, run.ClientCPUSeconds, run.ServerCPUSeconds, run.CPUUtil, run.OtherLoad, run.Retries, rss, run.LoadBefore, run.LoadAfter)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| method | concurrency | best s | median s | median CPU s (client+server) | rounds |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
		for _, m := range f.Summary {
			fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %.2f | %d |\n", m.Method, concurrency(m.Concurrency), m.Best, m.Median, m.CPU, len(m.Seconds))
		}
		fmt.Fprintln(w)
		if f.RawBest != nil {
			fmt.Fprintf(w, "Raw limit (a): %.2fs (psql, concurrency %d).\n", f.RawBest.Best, f.RawBest.Concurrency)
		}
		for _, k := range []string{"b/a", "c/a", "d/b", "e/a", "e/b", "b/a paired median", "c/a paired median", "e/a paired median", "e/b paired median", "b/a CPU", "c/a CPU"} {
			if v, ok := f.Ratios[k]; ok {
				fmt.Fprintf(w, "- %s = %.3f\n", k, v)
			}
		}
		fmt.Fprintln(w)
	}
	for _, s := range r.Scale {
		fmt.Fprintf(w, "## Control plane: %d tenants (load %s)\n\n", s.Tenants, s.Load)
		fmt.Fprintln(w, "| what | wall ms | p50 ms | max ms | peak RSS | tenant conns | detail |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | --- |")
		for _, row := range s.Rows {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %d | %s |\n", row.What,
				num(row.MS), num(row.P50MS), num(row.MaxMS), unit(row.MaxRSSMB, " MB"), row.TenantConns,
				strings.ReplaceAll(row.Detail, "\n", " "))
		}
		fmt.Fprintln(w)
	}
	if q := r.Queue; q != nil {
		fmt.Fprintf(w, "## Queue: enqueue → worker start, idle, %d jobs each (load %s)\n\n", q.Samples, q.Load)
		fmt.Fprintln(w, "| enqueued by | p50 ms | p90 ms | p99 ms | max ms | Enqueue call p50 ms |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: |")
		for _, s := range q.Scenarios {
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", s.Name, s.P50, s.P90, s.P99, s.Max, s.EnqueueP50)
		}
		fmt.Fprintln(w)
	}
	if p := r.Profile; p != nil {
		fmt.Fprintf(w, "## Profile: one tenant at a time, %d tenants, averages per tenant\n\n", p.Tenants)
		fmt.Fprintln(w, "| client | ms | server CPU ms | tenant backend CPU ms | tenant conns | tenant round trips | tenant KB | control-plane conns | control-plane round trips |")
		fmt.Fprintln(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		for _, row := range p.Rows {
			fmt.Fprintf(w, "| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
				row.What, row.MSPerTenant, row.ServerCPUMS, row.BackendCPUMS, row.TenantConns, row.TenantRTs, row.TenantKB, row.ControlConns, row.ControlRTs)
		}
		fmt.Fprintln(w)
	}
	if r.Locks != nil {
		r.Locks.write(w)
	}
	writeColdStart(w, r.ColdStart)
	if r.Schemas != nil {
		r.Schemas.write(w)
	}
	fmt.Fprintf(w, "Finished %s (%s).\n", r.Finished.Format("15:04:05 UTC"), r.Finished.Sub(r.Started).Round(time.Second))
}

func concurrency(c int) string {
	if c == 0 {
		return "default"
	}
	return fmt.Sprint(c)
}

func num(v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f", v)
}

func unit(v float64, u string) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f%s", v, u)
}
