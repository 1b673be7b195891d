package conductor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// GET /v1/pools/{name}/logs: the last lines each live host running the
// pool kept of its workers' output (internal/agent, logtail.go), merged in
// time order, then, with follow=true, every new line as it is published,
// as NDJSON (docs/api.md, "Logs").
const (
	// defaultLogTail is the lines asked of each host when tail is not
	// given; wire.MaxLogTail at most.
	defaultLogTail = 100
	// logTailWait is how long the hosts have to answer, all at once.
	logTailWait = 2 * time.Second
	// logTailBudget bounds the bytes of tails one request gathers: each
	// host's answer is bounded to its share of it, within minHostTail and
	// wire.MaxLogTailBytes (16 KiB each past 256 hosts).
	logTailBudget = 4 << 20
	minHostTail   = 16 << 10
	// logLiveBuffer is the live lines the subscription holds before the
	// stream's pump takes them (it takes them as they come).
	logLiveBuffer = 4096
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
// tail is missing or incomplete: Error says why.
type logNote struct {
	Host  string `json:"host"`
	Pool  string `json:"pool"`
	Error string `json:"error"`
}

// hostTail is one host's answer to a tail request, or why there is none.
type hostTail struct {
	host string
	tail wire.LogTail
	note string // why the tail is missing or cut; "" if whole
	ok   bool   // the host answered with its lines
}

// streamLogs serves GET /v1/pools/{name}/logs?host=ID&tail=N&follow=true.
// With follow it subscribes to the lines before it asks the hosts for
// their tails, and drops from the live lines those the tails gave (seam),
// so that none is lost or doubled where they meet. A client that does not
// read is cut off as an event stream's is (stream.go).
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
	var live *pump[*nats.Msg]
	if q.follow {
		msgs, unsubscribe, err := c.subscribeLogs(s.ctx, q)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		defer unsubscribe()
		live = startPump(s, msgs, c.liveFrame(q.pool))
		defer func() { s.cancel(); <-live.done }() // before the unsubscribe
	}
	tails := c.askTails(s.ctx, hosts, q)
	if s.begin("application/x-ndjson") != nil {
		return
	}
	if err := writeTails(s, q.pool, tails); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.cut(streamWriteTimeout, 0)
			panic(http.ErrAbortHandler)
		}
		return
	}
	if live != nil {
		serveStream(s, live, seam(c.space, tails), []byte("\n"))
	}
}

// readLogQuery reads and checks the path and query of r.
func readLogQuery(r *http.Request) (logQuery, error) {
	v := r.URL.Query()
	q := logQuery{pool: r.PathValue("name"), host: v.Get("host"), tail: defaultLogTail}
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

// logHosts returns the live hosts that run q's pool (q.host only, if set).
func (c *Conductor) logHosts(ctx context.Context, q logQuery) ([]string, error) {
	live, err := c.client.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, h := range live {
		if (q.host == "" || h.Host == q.host) && slices.ContainsFunc(h.Pools, func(p client.HostPool) bool { return p.Name == q.pool }) {
			hosts = append(hosts, h.Host)
		}
	}
	switch {
	case len(hosts) > 0:
		return hosts, nil
	case q.host != "":
		return nil, noLogHost(fmt.Sprintf("host %s is not live or does not run pool %s", q.host, q.pool))
	default:
		return nil, noLogHost("no live host runs pool " + q.pool)
	}
}

// subscribeLogs subscribes to the lines of q's pool (on q's host only, if
// set: hosts that start later included) and returns once the subscription
// is in place at the server.
func (c *Conductor) subscribeLogs(ctx context.Context, q logQuery) (<-chan *nats.Msg, func(), error) {
	msgs := make(chan *nats.Msg, logLiveBuffer)
	sub, err := c.nc.ChanSubscribe(c.space.Logs(cmp.Or(q.host, "*"), q.pool), msgs)
	if err != nil {
		return nil, nil, fmt.Errorf("conductor: subscribe to the logs: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.nc.FlushWithContext(ctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, nil, fmt.Errorf("conductor: subscribe to the logs: %w", err)
	}
	return msgs, func() { _ = sub.Unsubscribe() }, nil
}

// askTails asks every host of hosts, at once, for the last q.tail lines of
// q's pool, and gives each logTailWait to answer.
func (c *Conductor) askTails(ctx context.Context, hosts []string, q logQuery) []hostTail {
	if q.tail == 0 {
		return nil
	}
	maxBytes := min(wire.MaxLogTailBytes, max(minHostTail, logTailBudget/len(hosts)))
	data, _ := json.Marshal(wire.LogTailRequest{Pool: q.pool, Tail: q.tail, MaxBytes: maxBytes}) // always encodes
	ctx, cancel := context.WithTimeout(ctx, logTailWait)
	defer cancel()
	out := make([]hostTail, len(hosts))
	var wg sync.WaitGroup
	for i, host := range hosts {
		wg.Go(func() { out[i] = c.askTail(ctx, host, q, data, maxBytes) })
	}
	wg.Wait()
	return out
}

// askTail asks host for its tail with the encoded request data. Its
// answer comes on a command's reply subject, the one kind a host may
// publish on (subject.ControlReply), and keeps only the lines of that host
// and pool, q.tail at most.
func (c *Conductor) askTail(ctx context.Context, host string, q logQuery, data []byte, maxBytes int) hostTail {
	ht := hostTail{host: host}
	reply := subject.ControlReply(c.nc.NewInbox())
	sub, err := c.nc.SubscribeSync(reply)
	if err != nil {
		ht.note = fmt.Sprintf("host %s was not asked: %v", host, err)
		return ht
	}
	defer func() { _ = sub.Unsubscribe() }()
	// One answer is read; a host that sends more holds no more than this.
	_ = sub.SetPendingLimits(4, 4*wire.MaxLogTailBytes)
	if err := c.nc.PublishRequest(c.space.LogTail(host), reply, data); err != nil {
		ht.note = fmt.Sprintf("host %s was not asked: %v", host, err)
		return ht
	}
	m, err := sub.NextMsgWithContext(ctx)
	switch {
	case err == nil && len(m.Data) == 0 && m.Header.Get(names.HeaderNATSStatus) == "503":
		ht.note = fmt.Sprintf("host %s does not answer for its logs (a workerd older than this conductord?)", host)
		return ht
	case errors.Is(err, context.DeadlineExceeded):
		ht.note = fmt.Sprintf("host %s did not answer in %s", host, logTailWait)
		return ht
	case err != nil:
		ht.note = fmt.Sprintf("host %s did not answer: %v", host, err)
		return ht
	}
	if err := json.Unmarshal(m.Data, &ht.tail); err != nil {
		ht.note = fmt.Sprintf("host %s answered what is no tail: %v", host, err)
		return ht
	}
	if ht.tail.Error != "" {
		ht.note = fmt.Sprintf("host %s: %s", host, ht.tail.Error)
		return ht
	}
	ht.ok = true
	ht.tail.Lines = slices.DeleteFunc(ht.tail.Lines, func(l wire.LogLine) bool { return l.Host != host || l.Pool != q.pool })
	ht.tail.Lines = ht.tail.Lines[max(0, len(ht.tail.Lines)-q.tail):]
	if ht.tail.Cut {
		ht.note = fmt.Sprintf("host %s left its oldest lines out: a host's answer is bounded to %d bytes", host, maxBytes)
	}
	return ht
}

// writeTails writes a note for each host whose tail is missing or cut,
// then every tail's lines merged in time order (each host's in its order).
func writeTails(s *stream, pool string, tails []hostTail) error {
	var buf []byte
	var lines []wire.LogLine
	for _, t := range tails {
		if t.note != "" {
			data, _ := json.Marshal(logNote{Host: t.host, Pool: pool, Error: t.note}) // always encodes
			buf = append(append(buf, data...), '\n')
		}
		lines = append(lines, t.tail.Lines...)
	}
	slices.SortStableFunc(lines, func(a, b wire.LogLine) int { return a.Time.Compare(b.Time) })
	for _, l := range lines {
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

// liveFrame returns the frame of a line published for pool: nil (skipped)
// for a message that is not a line of the host and pool its subject names.
func (c *Conductor) liveFrame(pool string) func(*nats.Msg) []byte {
	return func(m *nats.Msg) []byte {
		host, p := c.space.ParseLogs(m.Subject)
		var l wire.LogLine
		if p != pool || json.Unmarshal(m.Data, &l) != nil || l.Host != host || l.Pool != pool {
			return nil
		}
		return lineFrame(l)
	}
}

// seam tells the live lines to keep once the tails are written: a line
// numbered (names.HeaderLogSeq) in the epoch of its host's tail and below
// the tail's Next was in the ring when the host answered, so the tail had
// it (or left it out as older than asked for); any other line came after
// and is kept. The subscription was in place at the server before the
// hosts were asked, so each line the ring took after its answer reaches
// it. A host that did not answer has all its live lines kept; a line with
// no number (an older workerd) too.
func seam(sp subject.Space, tails []hostTail) func(*nats.Msg) bool {
	type mark struct {
		epoch string
		next  uint64
	}
	marks := map[string]mark{}
	for _, t := range tails {
		if t.ok {
			marks[t.host] = mark{t.tail.Epoch, t.tail.Next}
		}
	}
	return func(m *nats.Msg) bool {
		host, _ := sp.ParseLogs(m.Subject)
		mk, ok := marks[host]
		if !ok {
			return true
		}
		epoch, seq, ok := wire.ParseLogSeq(m.Header.Get(names.HeaderLogSeq))
		return !ok || epoch != mk.epoch || seq >= mk.next
	}
}
