package conductor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/wire"
)

// OldestQueued returns, for job types in name order, at most limit of
// them (0 or less: no limit), when the oldest job of each that no host
// has taken yet was queued, or the zero time if none waits. A type that
// has neither a job in the job stream nor a consumer (a pool that served
// it) is not in the map.
//
// A job no host has taken is one past its consumer's delivered sequence:
// a job held ahead or running is not waiting, nor is a failed attempt's
// job waiting out its retry backoff (it was delivered; JetStream gives it
// back when the backoff ends). The time is the job message's, set by
// the server that stored it.
//
// The cost is two requests to JetStream (the stream's subjects, its
// consumers), then one direct get of a message per priority of a type
// that has jobs not yet taken: a scrape of /metrics reads it, through
// internal/metrics, which caches it and bounds limit.
func (c *Conductor) OldestQueued(ctx context.Context, limit int) (map[string]time.Time, error) {
	stream, info, err := c.jobStream(ctx)
	if err != nil {
		return nil, err
	}
	type key struct{ typ, prio string }
	subjects := map[key]string{}
	var types []string
	for subj, n := range info.State.Subjects {
		typ, prio := c.space.ParseJob(subj)
		if typ == "" || n == 0 {
			continue
		}
		subjects[key{typ, prio}] = subj
		types = append(types, typ)
	}
	// A consumer's delivered sequence is where the jobs not taken yet
	// start; one with none pending has none. A type with a consumer and
	// no job is in the map, with the zero time.
	from := map[key]uint64{}
	consumers := stream.ListConsumers(ctx)
	for ci := range consumers.Info() {
		typ, prio := c.space.ParseConsumer(ci.Name)
		if typ == "" {
			continue
		}
		types = append(types, typ)
		if ci.NumPending == 0 {
			from[key{typ, prio}] = 0 // nothing waits
			continue
		}
		from[key{typ, prio}] = ci.Delivered.Stream + 1
	}
	if err := consumers.Err(); err != nil {
		return nil, fmt.Errorf("read job consumers: %w", err)
	}
	slices.Sort(types)
	types = slices.Compact(types)
	if limit > 0 && len(types) > limit {
		types = types[:limit]
	}
	out := make(map[string]time.Time, len(types))
	for _, typ := range types {
		var oldest time.Time
		for _, prio := range wire.Priorities {
			k := key{typ, string(prio)}
			subj, ok := subjects[k]
			if !ok {
				continue
			}
			seq, known := from[k]
			switch {
			case known && seq == 0:
				continue
			case !known:
				seq = 1 // no consumer yet: every job waits
			}
			msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // taken since
			}
			if err != nil {
				return nil, fmt.Errorf("read the oldest job of type %s: %w", typ, err)
			}
			if oldest.IsZero() || msg.Time.Before(oldest) {
				oldest = msg.Time
			}
		}
		out[typ] = oldest
	}
	return out, nil
}
