package conductor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/logtail"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// GET /v1/pools/{name}/logs: the last lines each live host running the
// pool kept of its workers' output (internal/agent, logtail.go), merged in
// time order, then, with follow=true, every new line as it is published,
// as NDJSON (docs/api.md, "Logs"). internal/logtail asks the hosts and
// joins their tails to the live lines.
const (
	// logChunk is the bytes of tail lines written at once.
	logChunk = 32 << 10
)

// logQuery is what GET /v1/pools/{name}/logs asks for.
type logQuery struct {
	pool, host string
	tail       int
	follow     bool
}

// logNote is the object that stands, in a log stream, for a host whose
// tail is missing or incomplete, or that left, or (no Host) for the live
// lines left out while the tails were asked: Error says why.
type logNote struct {
	Host  string `json:"host,omitempty"` // none: about the stream`
	Pool  string `json:"pool"`
	Error string `json:"error"`
}

// streamLogs serves GET /v1/pools/{name}/logs?host=ID&tail=N&follow=true.
// With follow it subscribes to the lines before it asks the hosts for
// their tails, and drops from the live lines those the tails gave
// (logtail.Seam), so that none is lost or doubled where they meet. A
// client that does not read is cut off as an event stream's is
// (stream.go).
func (c *Conductor) streamLogs(w http.ResponseWriter, r *http.Request) {
	q, err := readLogQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	hosts, err := c.logHosts(r.Context(), q)
	switch {
	case errors.As(err, new(noLogHost)):
		writeError(w, http.StatusNotFound, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s, end := c.openStream(w, r, "log")
	defer end()
	var live *pump[liveItem]
	if q.follow {
		msgs, unsubscribe, err := logtail.Subscribe(s.ctx, c.nc, c.space, q.pool, q.host)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		defer unsubscribe()
		items, watched := make(chan liveItem), make(chan struct{})
		go func() {
			defer close(watched)
			c.watchLive(s.ctx, q, hosts, msgs, items)
		}()
		// The lines past the stream's bound while the hosts are asked
		// for their tails are dropped, and said so: the client has not
		// been given anything to read yet.
		live = startPumpDropping(s, items, c.liveFrame(q.pool), func(it liveItem) bool { return it.msg != nil }, func(n int) []byte {
			return noteFrame("", q.pool, fmt.Sprintf(
				"%d lines of pool %s left out: they came while the hosts were asked for their tails, past the stream's buffer of %d bytes", n, q.pool, c.cfg.EventBuffer))
		})
		defer func() { s.cancel(); <-live.done; <-watched }() // before the unsubscribe
	}
	tails := logtail.Ask(s.ctx, c.nc, c.space, hosts, q.pool, q.tail)
	if s.begin("application/x-ndjson") != nil {
		return
	}
	if err := writeTails(s, q.pool, tails); err != nil {
		s.abortIfTimedOut(err)
		return
	}
	if live != nil {
		seam := logtail.NewSeam(c.space, tails)
		serveStream(s, live, func(it liveItem) bool { return it.msg == nil || seam.Keep(it.msg) }, []byte("\n"))
	}
}

// readLogQuery reads and checks the path and query of r.
func readLogQuery(r *http.Request) (logQuery, error) {
	v := r.URL.Query()
	q := logQuery{pool: r.PathValue("name"), host: v.Get("host"), tail: client.DefaultLogTail}
	if err := subject.Token("pool", q.pool); err != nil {
		return q, err
	}
	if q.host != "" {
		if err := subject.Token("host", q.host); err != nil {
			return q, err
		}
	}
	if t := v.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 || n > wire.MaxLogTail {
			return q, fmt.Errorf("tail must be a whole number of lines from 0 to %d, not %q", wire.MaxLogTail, t)
		}
		q.tail = n
	}
	if f := v.Get("follow"); f != "" {
		b, err := strconv.ParseBool(f)
		if err != nil {
			return q, fmt.Errorf("follow must be true or false, not %q", f)
		}
		q.follow = b
	}
	return q, nil
}

// noLogHost is the error of a request for the logs of a pool no live host
// runs (or the host asked for does not): 404.
type noLogHost string

func (e noLogHost) Error() string { return string(e) }

// logHosts returns the live hosts that run q's pool (q.host only, if set),
// and whose credential is of its type: a host's heartbeat may name any
// pool, and its tail would be served as that pool's.
func (c *Conductor) logHosts(ctx context.Context, q logQuery) ([]string, error) {
	live, err := c.client.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	hosts := c.poolHosts(live, q)
	switch {
	case len(hosts) > 0:
		return hosts, nil
	case q.host != "":
		return nil, noLogHost(fmt.Sprintf("host %s is not live or does not run pool %s", q.host, q.pool))
	default:
		return nil, noLogHost("no live host runs pool " + q.pool)
	}
}

// poolHosts returns those of live that run q's pool (q.host only, if set)
// under a credential that may run it.
func (c *Conductor) poolHosts(live []client.Host, q logQuery) []string {
	var hosts []string
	for _, h := range live {
		if (q.host == "" || h.Host == q.host) && slices.ContainsFunc(h.Pools, func(p client.HostPool) bool { return p.Name == q.pool }) &&
			c.access.hostMayRun(h.Host, q.pool) {
			hosts = append(hosts, h.Host)
		}
	}
	return hosts
}

// liveItem is an item of a log stream's live part: a line's message, or
// (msg nil) the frame of a note about a host.
type liveItem struct {
	msg  *nats.Msg
	note []byte
}

// hostsCheck is how often a log stream that follows checks that its hosts
// still run the pool.
const hostsCheck = time.Second

// watchLive hands the lines of msgs to out and, when a host of the stream
// leaves (it is not live any more, or runs the pool no more), a note
// saying so: {"host","pool","error":"host h2 left ..."}. A stream of one
// host (q.host) then ends: out is closed once the note is given. Hosts
// that start running the pool later are watched too. It returns when ctx
// is done or the stream has ended.
func (c *Conductor) watchLive(ctx context.Context, q logQuery, hosts []string, msgs <-chan *nats.Msg, out chan<- liveItem) {
	give := func(it liveItem) bool {
		select {
		case out <- it:
			return true
		case <-ctx.Done():
			return false
		}
	}
	watched := map[string]bool{}
	for _, h := range hosts {
		watched[h] = true
	}
	tick := time.NewTicker(hostsCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-msgs:
			if !give(liveItem{msg: m}) {
				return
			}
		case <-tick.C:
			now := c.poolHosts(c.liveHosts(), q)
			for h := range watched {
				if slices.Contains(now, h) {
					continue
				}
				delete(watched, h)
				if !give(liveItem{note: noteFrame(h, q.pool, "host "+h+" left: it is not live, or runs pool "+q.pool+" no more")}) {
					return
				}
				if q.host != "" {
					close(out)
					return
				}
			}
			for _, h := range now {
				watched[h] = true
			}
		}
	}
}

// noteFrame is a note's line in a log stream.
func noteFrame(host, pool, why string) []byte {
	data, _ := json.Marshal(logNote{Host: host, Pool: pool, Error: why}) // always encodes
	return append(data, '\n')
}

// writeTails writes a note for each host whose tail is missing or cut,
// then every tail's lines merged in time order.
func writeTails(s *stream, pool string, tails []logtail.Answer) error {
	var buf []byte
	for _, t := range tails {
		if t.Note != "" {
			buf = append(buf, noteFrame(t.Host, pool, t.Note)...)
		}
	}
	for _, l := range logtail.Merge(tails) {
		buf = append(buf, lineFrame(l)...)
		if len(buf) >= logChunk {
			if err := s.write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	if len(buf) == 0 {
		return nil
	}
	return s.write(buf)
}

// lineFrame is l as one line of the stream: compact JSON, valid UTF-8.
func lineFrame(l wire.LogLine) []byte {
	data, _ := json.Marshal(l) // a LogLine always encodes
	return append(validJSON(data), '\n')
}

// liveFrame returns the frame of a live item of pool: a note's as it is, a
// line's as lineFrame makes it, nil (skipped) for a message that is not a
// line of the host and pool its subject names.
func (c *Conductor) liveFrame(pool string) func(liveItem) []byte {
	return func(it liveItem) []byte {
		if it.msg == nil {
			return it.note
		}
		l, ok := logtail.Line(c.space, pool, it.msg)
		if !ok {
			return nil
		}
		return lineFrame(l)
	}
}
