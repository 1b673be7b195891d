package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// leftovers are the messages still in the job stream once every job of
// the run has ended: copies of jobs that nobody will take (each was
// counted as queued, and the work queue never removes it), with what the
// stream's consumers say of them.
type leftovers struct {
	ended     int      // messages of jobs that have ended
	pending   int      // messages of jobs that have not
	scanned   int      // messages read
	sample    []string // a few of them, described
	consumers []string
}

func (l leftovers) String() string {
	return fmt.Sprintf("%d messages left in the job stream (%d of jobs ended, %d of jobs not ended); consumers: %s; for example:\n  %s",
		l.scanned, l.ended, l.pending, strings.Join(l.consumers, "; "), strings.Join(l.sample, "\n  "))
}

// maxScan bounds the messages scanLeftovers reads.
const maxScan = 10_000

// scanLeftovers reads the messages of the job stream (up to maxScan) and
// the state of the job of each, and the stream's consumers' positions.
func scanLeftovers(ctx context.Context, cl *client.Client) (leftovers, error) {
	var l leftovers
	space, err := subject.New(cl.Config().Namespace)
	if err != nil {
		return l, err
	}
	js, err := jetstream.New(cl.Conn())
	if err != nil {
		return l, err
	}
	s, err := js.Stream(ctx, space.JobStream())
	if err != nil {
		return l, fmt.Errorf("open the job stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return l, fmt.Errorf("job stream info: %w", err)
	}
	for cn := range s.ConsumerNames(ctx).Name() {
		c, err := s.Consumer(ctx, cn)
		if err != nil {
			continue
		}
		ci, err := c.Info(ctx)
		if err != nil {
			continue
		}
		l.consumers = append(l.consumers, fmt.Sprintf("%s: undelivered %d, ack pending %d, delivered up to stream seq %d, ack floor stream seq %d",
			cn, ci.NumPending, ci.NumAckPending, ci.Delivered.Stream, ci.AckFloor.Stream))
	}
	kv, err := js.KeyValue(ctx, space.StateBucket())
	if err != nil {
		return l, fmt.Errorf("open the state bucket: %w", err)
	}
	if info.State.Msgs == 0 {
		return l, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && l.scanned < maxScan; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // removed: acked
		}
		l.scanned++
		id := m.Header.Get(names.HeaderJobID)
		status := "no state"
		if raw, err := stateOf(ctx, kv, cl, id); err == nil {
			var st rawState
			if json.Unmarshal(raw, &st) == nil {
				status = fmt.Sprintf("%s after %d attempts", st.Status, st.Attempts)
				if client.Status(st.Status).Final() {
					l.ended++
				} else {
					l.pending++
				}
			}
		}
		if len(l.sample) < 5 {
			l.sample = append(l.sample, fmt.Sprintf("seq %d (stored %s) job %s payload %s: %s", seq, m.Time.Format("15:04:05.000"), id, m.Data, status))
		}
	}
	return l, nil
}
