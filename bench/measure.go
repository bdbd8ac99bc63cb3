package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// cpuSample is the machine's CPU time counters (/proc/stat), in clock
// ticks, for the share of the machine a run kept busy.
type cpuSample struct{ busy, total float64 }

func readCPU() cpuSample {
	for line := range strings.SplitSeq(readFile("/proc/stat"), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != "cpu" {
			continue
		}
		var s cpuSample
		for i, v := range f[1:] {
			n, _ := strconv.ParseFloat(v, 64)
			s.total += n
			if i != 3 && i != 4 { // idle, iowait
				s.busy += n
			}
		}
		return s
	}
	return cpuSample{}
}

// utilization is the busy share of all cores between two samples, in percent.
func utilization(a, b cpuSample) float64 {
	if b.total <= a.total {
		return 0
	}
	return 100 * (b.busy - a.busy) / (b.total - a.total)
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// selfMaxRSS is this process's peak resident set size in bytes (VmHWM; see
// hwm).
func selfMaxRSS() int64 { return hwm("self") }

// childCPU reads a finished child's CPU time.
func childCPU(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// Peak RSS of a child process. rusage's maxrss cannot serve: Go starts
// children with vfork semantics (CLONE_VM), and Linux carries the peak RSS
// of the memory the child ran on before exec (the parent's) into the
// child's maxrss. VmHWM in /proc/PID/status is the peak of the child's own
// address space, so it is sampled while the child runs.

// hwm reads VmHWM of pid (or "self") in bytes, 0 when it cannot.
func hwm(pid string) int64 {
	for line := range strings.SplitSeq(readFile("/proc/"+pid+"/status"), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// rssWatcher samples a running child's VmHWM every few milliseconds.
type rssWatcher struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
}

// watchRSS starts sampling cmd, which must have been started.
func watchRSS(cmd *exec.Cmd) *rssWatcher {
	w := &rssWatcher{stop: make(chan struct{}), done: make(chan struct{})}
	pid := strconv.Itoa(cmd.Process.Pid)
	go func() {
		defer close(w.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if v := hwm(pid); v > w.peak.Load() {
				w.peak.Store(v)
			}
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// max stops sampling and returns the peak seen, in bytes. Call it once the
// child has exited (the last few milliseconds of a child's life may be
// missed).
func (w *rssWatcher) max() int64 {
	close(w.stop)
	<-w.done
	return w.peak.Load()
}

// runWatched runs cmd and returns its peak RSS.
func runWatched(cmd *exec.Cmd) (int64, error) {
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	w := watchRSS(cmd)
	err := cmd.Wait()
	return w.max(), err
}

// run is one timed run of one method.
type runResult struct {
	Key         string  `json:"key"` // raw, migrate, serve, naive
	Round       int     `json:"round"`
	Method      string  `json:"method"`
	Concurrency int     `json:"concurrency,omitempty"`
	Seconds     float64 `json:"seconds"`
	// ClientCPUSeconds is the CPU time of the client side: the psql
	// processes, the tenantmigrate process, or this process in-process.
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`
	// ServerCPUSeconds is the CPU time of the PostgreSQL cluster during the
	// run (bench's own cluster only).
	ServerCPUSeconds float64 `json:"server_cpu_seconds,omitempty"`
	// OtherLoad is the share of all cores, in percent, that went to
	// neither the cluster nor the client during the run: other users of
	// the machine. Runs with a high OtherLoad were disturbed.
	OtherLoad   float64 `json:"other_load_pct"`
	busySeconds float64
	// CPUUtil is the busy share of all cores during the run (client and
	// server), in percent.
	CPUUtil    float64 `json:"cpu_util_pct"`
	MaxRSSMB   float64 `json:"max_rss_mb,omitempty"`
	Retries    int     `json:"retries"`
	LoadBefore string  `json:"load_before"`
	LoadAfter  string  `json:"load_after"`
	Note       string  `json:"note,omitempty"`
}

// timer measures one run.
type timer struct {
	start  time.Time
	cpu    cpuSample
	load   string
	srv    *server
	srvCPU time.Duration
}

func (s *server) startTimer() timer {
	return timer{start: time.Now(), cpu: readCPU(), load: loadAvg(), srv: s, srvCPU: s.cpuTime()}
}

func (t timer) stop(method string) runResult {
	r := runResult{
		Method:     method,
		Seconds:    time.Since(t.start).Seconds(),
		CPUUtil:    utilization(t.cpu, readCPU()),
		LoadBefore: t.load,
		LoadAfter:  loadAvg(),
	}
	if t.srvCPU >= 0 {
		r.ServerCPUSeconds = (t.srv.cpuTime() - t.srvCPU).Seconds()
	}
	r.busySeconds = (readCPU().busy - t.cpu.busy) * clockTick.Seconds()
	return r
}

// finish computes OtherLoad once ClientCPUSeconds is known: the CPU time
// the machine spent on neither the server nor the client during the run
// (other users' work), as a share of all cores over the run.
func (r *runResult) finish() {
	if r.ServerCPUSeconds == 0 || r.Seconds == 0 {
		return
	}
	other := r.busySeconds - r.ServerCPUSeconds - r.ClientCPUSeconds
	r.OtherLoad = max(0, 100*other/(r.Seconds*float64(runtime.NumCPU())))
}

// clockTick is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// cpuTime is the CPU time the PostgreSQL cluster has used, server
// processes and the backends they have reaped: the postmaster's own and
// children's times plus those of its live children. It is -1 when the
// cluster is not the bench's own (or /proc cannot be read). Unlike wall time,
// it hardly changes with the machine's other load.
func (s *server) cpuTime() time.Duration {
	if s.own == nil {
		return -1
	}
	pidLine, _, _ := strings.Cut(readFile(filepath.Join(s.own.Dir(), "data", "postmaster.pid")), "\n")
	pm, err := strconv.Atoi(strings.TrimSpace(pidLine))
	if err != nil {
		return -1
	}
	own, ok := procTimes(strconv.Itoa(pm), true)
	if !ok {
		return -1
	}
	total := own
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if ppid(e.Name()) == pm {
			t, _ := procTimes(e.Name(), false)
			total += t
		}
	}
	return time.Duration(total) * clockTick
}

// statFields returns the fields of /proc/PID/stat after the command name.
func statFields(pid string) []string {
	stat := readFile("/proc/" + pid + "/stat")
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(stat[i+1:])
}

// ppid is the parent pid of pid, or -1.
func ppid(pid string) int {
	f := statFields(pid)
	if len(f) < 2 {
		return -1
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return -1
	}
	return n
}

// procTimes is utime+stime of pid in clock ticks, plus cutime+cstime (its
// reaped children) when children is set.
func procTimes(pid string, children bool) (int64, bool) {
	f := statFields(pid)
	if len(f) < 15 { // fields 14-17 of stat are 11-14 here
		return 0, false
	}
	last := 12
	if children {
		last = 14
	}
	var sum int64
	for _, v := range f[11 : last+1] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		sum += n
	}
	return sum, true
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }
