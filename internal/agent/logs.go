package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/broker"
)

// Limits of the workers' output, per pool, beyond Config.LogRate.
const (
	// dropReportInterval is how often the lines dropped over the rate are
	// reported in workerd's log, one line per worker that lost some.
	dropReportInterval = 10 * time.Second
	// readFactor bounds the output read per pool per second, the lines
	// dropped included, to readFactor times the rate, a line costing 1 and
	// 1 more per readLineBytes; past it the reader pauses, so a worker that
	// writes faster has its writes block, and workerd's CPU stays bounded.
	readFactor    = 20
	readLineBytes = 256
)

// logForwarder logs workers' output lines in workerd's log, keeps the last
// of each pool in a ring (logtail.go) and publishes them on NATS, at most
// rate lines per second per pool (a token bucket with a burst of rate):
// one budget for all, so the log, the ring and the subscribers see the
// same lines. The lines over it are dropped from all, counted in the next
// line that goes out and, per worker, in a line of workerd's log every
// dropReportInterval. A dropped line costs no formatting nor encoding.
type logForwarder struct {
	nc    *nats.Conn
	space subject.Space
	log   *slog.Logger
	rate  float64
	every time.Duration // between reports of drops

	mu      sync.Mutex
	buckets map[string]*bucket // by pool; guarded by mu
}

// bucket is the budget of one pool and the lines it let out; its
// forwarder's mu guards it.
type bucket struct {
	tokens  float64     // lines that may go out now
	read    float64     // reading budget: see readFactor
	last    time.Time   // of the last refill
	dropped int         // since the last line that went out
	lost    map[int]int // dropped per worker index since the last report
	ring    *ring       // the last lines that went out (logtail.go)
}

// bucketLocked returns pool's bucket, made full at now if it has none.
// f.mu is held.
func (f *logForwarder) bucketLocked(pool string, now time.Time) *bucket {
	b := f.buckets[pool]
	if b == nil {
		b = &bucket{tokens: f.rate, read: f.rate * readFactor, last: now, lost: map[int]int{}, ring: newRing()}
		f.buckets[pool] = b
	}
	return b
}

// forget drops pool's bucket and the lines it kept: the pool was removed.
func (f *logForwarder) forget(pool string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.buckets, pool)
}

func newLogForwarder(nc *nats.Conn, space subject.Space, log *slog.Logger, rate int, every time.Duration) *logForwarder {
	return &logForwarder{
		nc: nc, space: space, log: log, rate: float64(rate), every: every,
		buckets: map[string]*bucket{},
	}
}

// forward logs and publishes line unless its pool is over the rate. It is
// called from the goroutine reading the worker's stream and pauses it only
// when the pool's output goes past the reading budget.
func (f *logForwarder) forward(line broker.LogLine) {
	now := time.Now()
	readRate := f.rate * readFactor
	f.mu.Lock()
	b := f.bucketLocked(line.Pool, now)
	elapsed := now.Sub(b.last).Seconds()
	b.last = now
	b.tokens = min(f.rate, b.tokens+elapsed*f.rate)
	b.read = min(readRate, b.read+elapsed*readRate)
	b.read -= float64(1 + len(line.Line)/readLineBytes)
	var pause time.Duration
	if b.read < 0 {
		// Pause until 10ms worth of budget is back, not line by line.
		pause = time.Duration((readRate/100 - b.read) / readRate * float64(time.Second))
	}
	if b.tokens < 1 {
		b.dropped++
		b.lost[line.Index]++
		f.mu.Unlock()
		time.Sleep(pause)
		return
	}
	b.tokens--
	l := wireLogLine(line)
	l.Dropped, b.dropped = b.dropped, 0
	seq := wire.LogSeq(b.ring.epoch, b.ring.add(l))
	f.mu.Unlock()
	f.log.Info("worker output", "pool", line.Pool, "index", line.Index, "pid", line.PID, "stream", line.Stream, "line", line.Line)
	if data, err := json.Marshal(l); err == nil {
		m := &nats.Msg{Subject: f.space.Logs(l.Host, l.Pool), Data: data, Header: nats.Header{names.HeaderLogSeq: []string{seq}}}
		_ = f.nc.PublishMsg(m)
	}
	time.Sleep(pause)
}

// run reports the drops every f.every until ctx is done, and once more then.
func (f *logForwarder) run(ctx context.Context) {
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			f.report()
		case <-ctx.Done():
			f.report()
			return
		}
	}
}

// report logs, for each worker whose lines were dropped since the last
// report, how many.
func (f *logForwarder) report() {
	type drop struct {
		pool        string
		index, lost int
	}
	var drops []drop
	f.mu.Lock()
	for pool, b := range f.buckets {
		for index, lost := range b.lost {
			drops = append(drops, drop{pool, index, lost})
		}
		clear(b.lost)
	}
	f.mu.Unlock()
	for _, d := range drops {
		f.log.Warn(fmt.Sprintf("dropped %d lines of pool %s worker %d in the last %s", d.lost, d.pool, d.index, f.every),
			"pool", d.pool, "index", d.index, "dropped", d.lost, "log_rate", f.rate)
	}
}
