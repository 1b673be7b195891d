package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

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

// TestChaos_KillsLeaveNoMessageBehind kills conductord three times under
// load, then checks that, once every job has ended and every worker is
// idle, no message is left in the job stream. Such messages, stray
// messages, were found by the long chaos run once in three (180 of jobs
// that had ended, counted queued for ever): the embedded server brings
// back messages acked before a kill, below their consumer's ack floor,
// and conductord now repairs them (docs/reliability.md, "Delivery"). This
// run seldom meets them: they need a job held across the end of one of
// the job stream's blocks (4 to 8 MiB), and its 20,000 jobs fill about
// one; the deterministic proofs are pkg/conductor's TestConductor_RepairsStrayMessages
// and TestNATSServer_CrashBringsBackAckedMessages. It runs with the long
// plan (make chaos).
func TestChaos_KillsLeaveNoMessageBehind(t *testing.T) {
	if os.Getenv("CHAOS") != "long" {
		t.Skip("runs with the long chaos plan: make chaos (CHAOS=long)")
	}
	const jobs, kills = 20_000, 3
	c := newCluster(t)
	f := newFaults(t, c, squares(2), 2, 0, 1)
	c.waitWorkers("squares", 4)
	cl, err := client.Connect(c.natsURL(), client.Config{}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	l := newLedger(jobs)
	plan := chaosPlan{jobs: jobs, spread: 40 * time.Second}
	ended := runJobs(ctx, l, cl, plan)
	for k := 1; k <= kills; k++ {
		require.True(t, poll(time.Minute, func() bool { return l.queued.Load() >= int64(k*jobs/(kills+1)) }), "jobs queued: %d", l.queued.Load())
		require.NoError(t, f.inject(ctx, killConductord))
	}
	select {
	case <-ended:
	case <-ctx.Done():
	}
	require.NoError(t, l.err())
	require.NoError(t, l.check())

	// The stray repair looks every 30s: a minute covers one.
	if !poll(time.Minute, func() bool {
		p := c.pool("squares")
		return workersIdle(c, 4) && p.Queued == 0 && p.Running == 0
	}) {
		left, err := scanLeftovers(ctx, cl)
		require.NoError(t, err)
		t.Fatalf("with every job ended and every worker idle for a minute, %s", left)
	}
}
