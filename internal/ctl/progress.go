package ctl

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// isTerminal tells whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress reports the jobs of submit -f queued so far on stderr: a bar
// redrawn in place on a terminal, else a line every progressEvery; nothing
// when quiet. It is used by one goroutine.
type progress struct {
	w          io.Writer
	tty, quiet bool
	total      int
	n          int
	start      time.Time
	last       time.Time // when the last line was written (not a terminal)
	drawn      bool
}

func newProgress(w io.Writer, tty, quiet bool, total int) *progress {
	now := time.Now()
	return &progress{w: w, tty: tty, quiet: quiet, total: total, start: now, last: now}
}

// add counts n more jobs queued.
func (p *progress) add(n int) {
	p.n += n
	if p.quiet {
		return
	}
	now := time.Now()
	if p.tty {
		fmt.Fprintf(p.w, "\r%s", p.bar(now))
		p.drawn = true
		return
	}
	if now.Sub(p.last) >= progressEvery {
		p.last = now
		fmt.Fprintf(p.w, "conductorctl: queued %d of %d jobs (%.0f jobs/s)\n", p.n, p.total, rate(p.n, now.Sub(p.start).Seconds()))
	}
}

// bar is the progress bar: [#####.....] 45% 4500/10000 jobs 1234 jobs/s.
func (p *progress) bar(now time.Time) string {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.n) / float64(p.total)
	}
	full := int(frac * width)
	return fmt.Sprintf("[%s%s] %3.0f%% %d/%d jobs %.0f jobs/s ", strings.Repeat("#", full), strings.Repeat(".", width-full),
		frac*100, p.n, p.total, rate(p.n, now.Sub(p.start).Seconds()))
}

// clear wipes the bar off its line, before a line is written to the same
// terminal (a batch id on stdout); the next add draws it again.
func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// done ends the bar's line.
func (p *progress) done() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}
