package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	// As pkgclient: this package's client is conductorctl's HTTP client.
	pkgclient "github.com/conductor-run/conductor/pkg/client"
)

// ANSI sequences of top on a terminal.
const (
	ansiClear  = "\x1b[H\x1b[2J"
	ansiRed    = "\x1b[31m"
	ansiYellow = "\x1b[33m"
	ansiReset  = "\x1b[0m"
)

func (a *app) topCmd() *cobra.Command {
	var interval time.Duration
	var once bool
	cmd := &cobra.Command{
		Use:   "top [--interval D] [--once]",
		Short: "a live view of hosts, pools and the latest dead jobs",
		Long: `A view of the cluster redrawn every --interval (1s): the hosts, each pool with its
state (failed and backoff in red, draining in yellow on a terminal), its jobs queued and
running, its workers, the jobs that succeeded and failed per second (from the difference
of two polls), and its dead jobs; then the latest dead jobs. q or Ctrl-C quits.
With --once, or when stdout is not a terminal, it prints one frame (after two polls,
--interval apart, for the rates) and exits.`,
		Args: nargs(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 {
				return usageErrorf("--interval: want a duration over 0, not %s", interval)
			}
			tty := isTerminal(a.stdout) && !a.api.json()
			return a.api.top(cmd.Context(), topView{interval: interval, once: once || !tty, tty: tty, stdin: a.stdin})
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", time.Second, "how often to poll and redraw")
	cmd.Flags().BoolVar(&once, "once", false, "print one frame and exit")
	return cmd
}

type topView struct {
	interval  time.Duration
	once, tty bool
	stdin     io.Reader
}

// topPoll is what one poll reads.
type topPoll struct {
	at    time.Time
	hosts []pkgclient.Host
	pools []pkgclient.Pool
	dead  []pkgclient.Job
}

func (c *client) poll(ctx context.Context) (*topPoll, error) {
	p := &topPoll{at: c.now()}
	for path, into := range map[string]any{"/v1/hosts": &p.hosts, "/v1/pools": &p.pools, "/v1/jobs?status=dead&limit=5": &p.dead} {
		raw, err := c.get(ctx, path)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, into); err != nil {
			return nil, fmt.Errorf("decode %s: %w", path, err)
		}
	}
	return p, nil
}

// top polls and draws until ctx ends or q is pressed; with once, it draws
// one frame from two polls.
func (c *client) top(ctx context.Context, v topView) error {
	if !v.once {
		var stop context.CancelFunc
		ctx, stop = context.WithCancel(ctx)
		defer stop()
		restore := quitOnQ(v.stdin, stop)
		defer restore()
	}
	tick := time.NewTicker(v.interval)
	defer tick.Stop()
	prev, err := c.poll(ctx)
	if err != nil {
		return err
	}
	if !v.once {
		c.draw(v, nil, prev)
	}
	var downSince time.Time // when the polls began to fail; zero: they do not
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		cur, err := c.poll(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil && v.once:
			return err
		case err != nil:
			// A live view outlives an outage (conductord restarting):
			// it says so and polls again.
			if downSince.IsZero() {
				downSince = c.now()
			}
			c.drawOutage(v, downSince, err)
			continue
		}
		downSince = time.Time{}
		if c.json() {
			return encodeJSON(c.out, frameOf(v, prev, cur), "  ")
		}
		c.draw(v, prev, cur)
		if v.once {
			return nil
		}
		prev = cur
	}
}

// quitOnQ cancels with stop when q or Ctrl-C is typed on stdin, a
// terminal put in raw mode; restore puts it back. Not a terminal: Ctrl-C
// is the signal that ends ctx. Its reader stays blocked on stdin after
// restore (a read of a terminal cannot be interrupted portably): it ends
// with conductorctl's process, which top's return ends.
func quitOnQ(stdin io.Reader, stop context.CancelFunc) (restore func()) {
	f, ok := stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	old, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return func() {}
	}
	go func() {
		b := make([]byte, 1)
		for {
			if _, err := f.Read(b); err != nil || b[0] == 'q' || b[0] == 'Q' || b[0] == 3 {
				stop()
				return
			}
		}
	}()
	return func() { _ = term.Restore(int(f.Fd()), old) }
}

// draw writes one frame: cur, with rates from prev (nil: none yet).
func (c *client) draw(v topView, prev, cur *topPoll) {
	var b bytes.Buffer
	if v.tty && !v.once {
		b.WriteString(ansiClear)
	}
	leaving := 0
	for _, h := range cur.hosts {
		if h.Leaving {
			leaving++
		}
	}
	fmt.Fprintf(&b, "conductor %s at %s, every %s", c.base, cur.at.Format("15:04:05"), v.interval)
	if !v.once {
		b.WriteString("; q quits")
	}
	fmt.Fprintf(&b, "\nhosts: %d live, %d leaving\n\n", len(cur.hosts), leaving)

	rows := [][]string{{"TYPE", "STATE", "QUEUED", "RUNNING", "WORKERS", "OK/S", "FAILED/S", "DEAD"}}
	for _, p := range cur.pools {
		ok, failed := "-", "-"
		if old := findPool(prev, p.Type); old != nil {
			secs := cur.at.Sub(prev.at).Seconds()
			ok = fmt.Sprintf("%.1f", perSecond(old.Succeeded, p.Succeeded, secs))
			failed = fmt.Sprintf("%.1f", perSecond(old.Failed, p.Failed, secs))
		}
		rows = append(rows, []string{p.Type, cmpDash(p.State), fmt.Sprint(p.Queued), fmt.Sprint(p.Running),
			fmt.Sprint(p.Workers), ok, failed, fmt.Sprint(p.Dead)})
	}
	colour := func(row, col int, s string) string {
		if !v.tty || row == 0 || col != 1 {
			return s
		}
		switch strings.TrimSpace(s) {
		case "failed", "backoff":
			return ansiRed + s + ansiReset
		case "draining":
			return ansiYellow + s + ansiReset
		}
		return s
	}
	writeGrid(&b, rows, colour)

	b.WriteString("\nlatest dead jobs\n")
	rows = [][]string{{"ID", "TYPE", "ATTEMPTS", "AGE", "ERROR"}}
	for _, j := range cur.dead {
		rows = append(rows, []string{j.ID, j.Type, fmt.Sprint(j.Attempts), ago(j.UpdatedAt, cur.at), cell("error", j.Error)})
	}
	writeGrid(&b, rows, nil)
	out := b.String()
	if v.tty && !v.once {
		out = strings.ReplaceAll(out, "\n", "\r\n") // raw mode: no carriage return of its own
	}
	_, _ = io.WriteString(c.out, out)
}

// topFrame is a frame of top as JSON (-o json): the rates are per
// second, between the two polls.
type topFrame struct {
	At       time.Time       `json:"at"`
	Interval string          `json:"interval"`
	Hosts    topHosts        `json:"hosts"`
	Pools    []topPool       `json:"pools"`
	Dead     []pkgclient.Job `json:"dead"`
}

type topHosts struct {
	Live    int `json:"live"`
	Leaving int `json:"leaving"`
}

type topPool struct {
	Type            string  `json:"type"`
	State           string  `json:"state"`
	Queued          int64   `json:"queued"`
	Running         int64   `json:"running"`
	Workers         int     `json:"workers"`
	OKPerSecond     float64 `json:"ok_per_second"`
	FailedPerSecond float64 `json:"failed_per_second"`
	Dead            uint64  `json:"dead"`
}

// frameOf is the frame of cur, with rates from prev.
func frameOf(v topView, prev, cur *topPoll) topFrame {
	f := topFrame{At: cur.at, Interval: v.interval.String(), Hosts: topHosts{Live: len(cur.hosts)}, Pools: []topPool{}, Dead: cur.dead}
	if f.Dead == nil {
		f.Dead = []pkgclient.Job{}
	}
	for _, h := range cur.hosts {
		if h.Leaving {
			f.Hosts.Leaving++
		}
	}
	for _, p := range cur.pools {
		tp := topPool{Type: p.Type, State: p.State, Queued: p.Queued, Running: p.Running, Workers: p.Workers, Dead: p.Dead}
		if old := findPool(prev, p.Type); old != nil {
			secs := cur.at.Sub(prev.at).Seconds()
			tp.OKPerSecond = perSecond(old.Succeeded, p.Succeeded, secs)
			tp.FailedPerSecond = perSecond(old.Failed, p.Failed, secs)
		}
		f.Pools = append(f.Pools, tp)
	}
	return f
}

// drawOutage writes the frame of a poll that failed: what failed, and
// since when.
func (c *client) drawOutage(v topView, since time.Time, err error) {
	var b bytes.Buffer
	if v.tty {
		b.WriteString(ansiClear)
	}
	fmt.Fprintf(&b, "conductor %s at %s, every %s; q quits\n\n", c.base, c.now().Format("15:04:05"), v.interval)
	fmt.Fprintf(&b, "conductord does not answer (since %s): %v\npolling again every %s\n", since.Format("15:04:05"), err, v.interval)
	out := b.String()
	if v.tty {
		out = strings.ReplaceAll(out, "\n", "\r\n")
	}
	_, _ = io.WriteString(c.out, out)
}

func findPool(p *topPoll, typ string) *pkgclient.Pool {
	if p == nil {
		return nil
	}
	for i := range p.pools {
		if p.pools[i].Type == typ {
			return &p.pools[i]
		}
	}
	return nil
}

// perSecond is the rate of a counter between two polls; a counter that
// went back (conductord's counters were created again) counts from 0.
func perSecond(before, after uint64, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	if after < before {
		before = 0
	}
	return float64(after-before) / secs
}

func cmpDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// writeGrid writes rows as aligned columns, two spaces apart; colour, if
// set, wraps a cell after it is padded, so that escapes do not count.
func writeGrid(w io.Writer, rows [][]string, colour func(row, col int, s string) string) {
	var widths []int
	for _, r := range rows {
		for i, s := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(s))
		}
	}
	for ri, r := range rows {
		var line strings.Builder
		for i, s := range r {
			if i < len(r)-1 {
				s += strings.Repeat(" ", widths[i]-utf8.RuneCountInString(s)+2)
			}
			if colour != nil {
				s = colour(ri, i, s)
			}
			line.WriteString(s)
		}
		fmt.Fprintln(w, strings.TrimRight(line.String(), " "))
	}
}
