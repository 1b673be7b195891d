package broker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

// TestPool_JobDeadline: a job's timeout is a deadline. The slow-job worker
// answers after the time its payload names, skipping the cancel op; an
// answer before the deadline wins, one after it (in the kill grace) is
// recorded but the attempt fails as timed out, and the worker, which
// answered, keeps serving.
func TestPool_JobDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	for _, tc := range []struct {
		name     string
		answerAt int // ms
		pool     bool
	}{
		{"InTime", 50, false},
		{"Late", 600, false},
		{"LatePoolTimeout", 600, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBundle(t)
			spec := b.spec("slow-job")
			spec.KillTimeout = 5 * time.Second // the answer comes in the grace: no SIGTERM
			j := &broker.Job{ID: "j1", Type: "test", Payload: json.RawMessage(fmt.Sprint(tc.answerAt)), Attempt: 1}
			if tc.pool {
				spec.JobTimeout = timeout
			} else {
				j.Timeout = timeout
			}
			pool, _ := setupEvents(t, spec, b)
			first := readyN(t, b, pool, 1)[0]
			select {
			case b.jobs <- j:
			case <-time.After(waitLimit):
				t.Fatal("no worker asked for the job")
			}
			e := b.outcome(t)
			require.False(t, e.out.Crashed)
			if time.Duration(tc.answerAt)*time.Millisecond < timeout {
				require.Empty(t, e.out.Err)
				require.False(t, e.out.TimedOut)
				require.Zero(t, e.out.LateBy)
				require.JSONEq(t, fmt.Sprint(tc.answerAt), string(e.out.Result))
			} else {
				require.True(t, e.out.TimedOut)
				require.False(t, e.out.Permanent)
				require.Nil(t, e.out.Result, "a late result is dropped")
				require.True(t, strings.HasPrefix(e.out.Err, "job timed out after 200ms (it answered "), e.out.Err)
				require.True(t, strings.HasSuffix(e.out.Err, " after the deadline)"), e.out.Err)
				require.GreaterOrEqual(t, e.out.LateBy, time.Duration(tc.answerAt)*time.Millisecond-timeout)
				require.GreaterOrEqual(t, e.out.Ended.Sub(e.out.Started), time.Duration(tc.answerAt)*time.Millisecond)
				require.NotEmpty(t, b.log.find("level=WARN", "job over its timeout; cancelling it", "job=j1"))
				require.NotEmpty(t, b.log.find("level=WARN", "answered after the job's deadline", "job=j1", "timeout=200ms"))
			}
			// The worker answered: it is not stopped, and serves the next job.
			b.submit(t, "j2", `1`)
			e = b.outcome(t)
			require.Empty(t, e.out.Err)
			require.Equal(t, first.PID, e.out.PID)
			w := readyN(t, b, pool, 1)[0]
			require.Equal(t, first.PID, w.PID)
			require.Zero(t, w.Restarts)
		})
	}
}
