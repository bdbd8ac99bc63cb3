package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// Progress display modes (--progress).
const (
	progressAuto  = "auto"  // bar on a terminal, plain lines otherwise
	progressBar   = "bar"   // a live bar redrawn in place
	progressPlain = "plain" // a line every --progress-interval
	progressNone  = "none"  // nothing until the summary
)

// barRedraw is how often the live bar is redrawn.
const barRedraw = 150 * time.Millisecond

// progress shows how a fleet run advances on w: done, failed, total, rate
// and ETA, as a live bar or as plain lines. It is also the writer of the
// run's logs, so that a log line never lands in the middle of the bar.
// Its methods are safe for concurrent use.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	mode     string
	interval time.Duration
	width    int // terminal width, for the bar

	start               time.Time
	total, done, failed int64
	running, stopped    bool
	drawn               bool // the bar is on screen, the cursor after it
	stopLoop, loopDone  chan struct{}

	// now and newTicker are the clock; tests replace them.
	now       func() time.Time
	newTicker func(d time.Duration) (ticks <-chan time.Time, stop func())
}

// newProgress returns a progress display on w. mode is one of the
// progress* constants; auto picks the bar when w is a terminal.
func newProgress(w io.Writer, mode string, interval time.Duration) *progress {
	p := &progress{w: w, mode: mode, interval: interval, width: 80, now: time.Now}
	p.newTicker = func(d time.Duration) (<-chan time.Time, func()) {
		t := time.NewTicker(d)
		return t.C, t.Stop
	}
	fd, isTerm := terminalFd(w)
	if p.mode == progressAuto {
		p.mode = progressPlain
		if isTerm && os.Getenv("TERM") != "dumb" {
			p.mode = progressBar
		}
	}
	if isTerm {
		if width, _, err := term.GetSize(fd); err == nil && width > 20 {
			p.width = width
		}
	}
	return p
}

// terminalFd reports whether w is a terminal, and its file descriptor.
func terminalFd(w io.Writer) (int, bool) {
	f, ok := w.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// validProgressMode checks a --progress value.
func validProgressMode(mode string) error {
	switch mode {
	case progressAuto, progressBar, progressPlain, progressNone:
		return nil
	}
	return usageErr("invalid --progress %q: want auto, bar, plain or none", mode)
}

// Start shows the display for total tenants, redrawing the bar or printing
// a plain line on every tick until Stop.
func (p *progress) Start(total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start, p.total, p.running = p.now(), total, true
	if p.mode != progressBar && p.mode != progressPlain {
		return
	}
	every := p.interval
	if p.mode == progressBar {
		every = barRedraw
		p.drawLocked()
	}
	ticks, stopTicker := p.newTicker(every)
	p.stopLoop, p.loopDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.loopDone)
		defer stopTicker()
		for {
			select {
			case <-p.stopLoop:
				return
			case <-ticks:
				p.tick()
			}
		}
	}()
}

func (p *progress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	if p.mode == progressBar {
		p.drawLocked()
		return
	}
	fmt.Fprintf(p.w, "progress: %s\n", p.figuresLocked())
}

// SetTotal changes the number of tenants the run expects.
func (p *progress) SetTotal(total int64) {
	p.mu.Lock()
	p.total = total
	p.mu.Unlock()
}

// RaiseTotal makes the total at least n.
func (p *progress) RaiseTotal(n int64) {
	p.mu.Lock()
	p.total = max(p.total, n)
	p.mu.Unlock()
}

// Done counts one tenant finished, failed or not.
func (p *progress) Done(failed bool) {
	p.mu.Lock()
	p.done++
	if failed {
		p.failed++
	}
	p.mu.Unlock()
}

// Stop ends the display: the bar is drawn a last time and the line ended.
// It is safe to call twice.
func (p *progress) Stop() {
	p.mu.Lock()
	if !p.running || p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	if p.mode == progressBar {
		p.drawLocked()
		fmt.Fprintln(p.w)
		p.drawn = false
	}
	p.mu.Unlock()
	if p.stopLoop != nil {
		close(p.stopLoop)
		<-p.loopDone
	}
}

// Write writes a log line, erasing the bar first and redrawing it after.
func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	n, err := p.w.Write(b)
	if p.mode == progressBar && p.running && !p.stopped {
		p.drawLocked()
	}
	return n, err
}

// rateLocked is the number of tenants finished per second so far.
func (p *progress) rateLocked() float64 {
	elapsed := p.now().Sub(p.start).Seconds()
	if elapsed <= 0 {
		return 0
	}
	return float64(p.done) / elapsed
}

// etaLocked is the expected time left, "?" before the first tenant is done.
func (p *progress) etaLocked() string {
	rate := p.rateLocked()
	if p.done == 0 || rate == 0 {
		return "?"
	}
	left := max(p.total-p.done, 0)
	return (time.Duration(float64(left) / rate * float64(time.Second))).Round(time.Second).String()
}

// figuresLocked are the figures of a plain progress line.
func (p *progress) figuresLocked() string {
	return fmt.Sprintf("%d/%d done, %d failed, %.1f tenants/s, elapsed %s, ETA %s",
		p.done, p.total, p.failed, p.rateLocked(),
		p.now().Sub(p.start).Round(time.Second), p.etaLocked())
}

// drawLocked draws the bar over the current line:
//
//	[########............]  45/100  45%  failed 2  12.3/s  ETA 4s
func (p *progress) drawLocked() {
	pct := 100
	if p.total > 0 {
		pct = int(min(p.done*100/p.total, 100))
	}
	text := fmt.Sprintf(" %d/%d %3d%%  failed %d  %.1f/s  ETA %s", p.done, p.total, pct, p.failed, p.rateLocked(), p.etaLocked())
	// A fixed width, so the bar does not jitter as the figures change.
	barWidth := min(max(p.width-60, 10), 40)
	filled := barWidth
	if p.total > 0 {
		filled = int(min(p.done*int64(barWidth)/p.total, int64(barWidth)))
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	fmt.Fprintf(p.w, "\r\x1b[K[%s]%s", bar, text)
	p.drawn = true
}
