package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// WorkerStats is one worker slot's entry of a Stats roll-up.
type WorkerStats struct {
	Host  string `json:"host"`
	Pool  string `json:"pool"`
	Index int    `json:"index"`
	// Last are its counters at its latest heartbeat (jobs_done among
	// them); Diff what they grew by since the previous roll-up (or since
	// the slot was first seen); TimeSpan the seconds Diff covers.
	Last     map[string]float64 `json:"last"`
	Diff     map[string]float64 `json:"diff"`
	TimeSpan float64            `json:"time_span"`
	// Gone: the slot was not in its host's latest heartbeat (its host
	// left, or the pool shrank): it is summed into Agg.Diff this once,
	// not into Agg.Last, and is in no roll-up after.
	Gone bool `json:"gone,omitempty"`
}

// Stats is one roll-up of the workers' counters.
type Stats struct {
	At  time.Time     `json:"at"`
	Raw []WorkerStats `json:"raw"`
	Agg struct {
		// Last sums Last over the slots alive; Diff sums Diff over every
		// entry.
		Last map[string]float64 `json:"last"`
		Diff map[string]float64 `json:"diff"`
	} `json:"agg"`
	// AvgTimeSpan is the mean of the entries' TimeSpan, in seconds.
	AvgTimeSpan float64 `json:"avg_time_span"`
}

// maxStatsMessage bounds a stats event a Client decodes.
const maxStatsMessage = 8 << 20

// Stats returns each roll-up of the workers' counters conductord makes
// from now on (every --stats-interval; docs/stats.md), until ctx ends;
// the channel is closed then (the goroutine that feeds it ends with ctx
// alone: give it one that ends). A roll-up the caller has not taken when
// the next comes is dropped: the next has the counters too.
func (c *Client) Stats(ctx context.Context) (<-chan Stats, error) {
	if err := c.forOperators("Stats"); err != nil {
		return nil, err
	}
	msgs := make(chan *nats.Msg, 4)
	sub, err := c.nc.ChanSubscribe(c.space.StatsEvent(), msgs)
	if err != nil {
		return nil, fmt.Errorf("conductor: subscribe to the stats: %w", err)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.nc.FlushWithContext(fctx); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("conductor: subscribe to the stats: %w", err)
	}
	out := make(chan Stats, 1)
	go func() {
		defer close(out)
		defer func() { _ = sub.Unsubscribe() }()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-msgs:
				var st Stats
				if len(m.Data) > maxStatsMessage || json.Unmarshal(m.Data, &st) != nil {
					continue
				}
				// The newest replaces one the caller has not taken.
				select {
				case <-out:
				default:
				}
				out <- st // room: this goroutine alone sends
				if c.onStatsTaken != nil {
					c.onStatsTaken()
				}
			}
		}
	}()
	return out, nil
}
