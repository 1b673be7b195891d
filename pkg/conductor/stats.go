package conductor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// counts are the ended attempts of one job type since its counters were
// created: Succeeded and Dead count jobs, Failed counts failed attempts that
// will be retried, Superseded the late outcomes not kept (a newer attempt
// held the job, or it had ended).
type counts struct {
	Succeeded  uint64 `json:"succeeded"`
	Failed     uint64 `json:"failed"`
	Dead       uint64 `json:"dead"`
	Superseded uint64 `json:"superseded,omitempty"`
}

// stats counts job ends per type and saves the counts to the stats bucket
// every second, so they survive a restart. It is a startstop.Service: the
// saver is its own goroutine, from Start until Stop, which saves once more
// before it returns. It owns byType and dirty; mu guards them: the
// subscription to the job ends writes (count), the HTTP API (snapshot)
// and the saver read.
type stats struct {
	*startstop.Func // runs run
	kv              jetstream.KeyValue
	log             *slog.Logger

	mu     sync.Mutex
	byType map[string]counts
	dirty  map[string]bool
}

func newStats(ctx context.Context, js jetstream.JetStream, space subject.Space, log *slog.Logger) (*stats, error) {
	kv, err := js.KeyValue(ctx, space.StatsBucket())
	if err != nil {
		return nil, fmt.Errorf("conductor: open stats bucket: %w", err)
	}
	s := &stats{kv: kv, log: log, byType: map[string]counts{}, dirty: map[string]bool{}}
	s.Func = startstop.NewFunc(s.run)
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("conductor: load stats: %w", err)
	}
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var c counts
		if json.Unmarshal(e.Value(), &c) == nil {
			s.byType[key] = c
		}
	}
	return s, nil
}

func (s *stats) count(typ, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byType[typ]
	switch wire.Status(status) {
	case wire.StatusSucceeded:
		c.Succeeded++
	case wire.StatusFailed:
		c.Failed++
	case wire.StatusDead:
		c.Dead++
	default:
		return
	}
	s.byType[typ] = c
	s.dirty[typ] = true
}

// superseded counts n late outcomes of typ that were not kept.
func (s *stats) superseded(typ string, n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.byType[typ]
	c.Superseded += uint64(n)
	s.byType[typ] = c
	s.dirty[typ] = true
}

func (s *stats) snapshot() map[string]counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]counts, len(s.byType))
	for k, v := range s.byType {
		out[k] = v
	}
	return out
}

// run saves dirty counts every second until ctx ends, then once more.
func (s *stats) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.save()
			return
		case <-t.C:
			s.save()
		}
	}
}

func (s *stats) save() {
	s.mu.Lock()
	batch := make(map[string]counts, len(s.dirty))
	for typ := range s.dirty {
		batch[typ] = s.byType[typ]
	}
	clear(s.dirty)
	s.mu.Unlock()
	for typ, c := range batch {
		data, _ := json.Marshal(c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := s.kv.Put(ctx, typ, data)
		cancel()
		if err != nil {
			s.log.Warn("save job counts", "type", typ, "err", err)
			s.mu.Lock()
			s.dirty[typ] = true
			s.mu.Unlock()
		}
	}
}
