package client

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/natstest"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// TestClient_JobEndedWith: a wait woken with the job's final state, as its
// end carries it, returns that state and reads nothing back; a state that
// is not a final one of the job and its type is not taken: the wait reads
// the store.
func TestClient_JobEndedWith(t *testing.T) {
	t.Parallel()
	type bundle struct {
		c      *Client
		states jetstream.KeyValue
		reads  func() int // the reads of job-1's state so far
	}
	setup := func(t *testing.T) bundle {
		ns := natstest.Server(t)
		nc := natstest.Conn(t, ns)
		ctx := context.Background()
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		space, err := subject.New("default")
		require.NoError(t, err)
		states, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: space.StateBucket()})
		require.NoError(t, err)
		// The reads of job-1's state, as the server is asked them: each
		// comes to the spy before the server answers it.
		spy := natstest.Conn(t, ns)
		sub, err := spy.SubscribeSync("$JS.API.DIRECT.GET.*." + subject.KV(space.StateBucket(), "job-1"))
		require.NoError(t, err)
		require.NoError(t, spy.Flush())
		reads := func() int {
			require.NoError(t, spy.Flush()) // every read asked so far is pending
			n, _, err := sub.Pending()
			require.NoError(t, err)
			return n
		}
		// Only JobEndedWith may wake the wait: no recheck within the test.
		c, err := New(nc, Config{FeedEnds: true, RecheckInterval: time.Hour})
		require.NoError(t, err)
		t.Cleanup(c.Close)
		return bundle{c: c, states: states, reads: reads}
	}
	state := func(t *testing.T, id, typ string, status wire.Status, result string) []byte {
		st, err := json.Marshal(wire.Job{ID: id, Type: typ, Status: status, Attempts: 1, Result: json.RawMessage(result)})
		require.NoError(t, err)
		return st
	}
	for _, tc := range []struct {
		name  string
		ended []byte // the state the end carries
		want  string // the result the wait returns
		reads int    // the reads of the state, the first one included
	}{
		{"final state of the job", state(t, "job-1", "squares", wire.StatusSucceeded, "49"), "49", 1},
		{"no state", nil, "1", 2},
		{"another type's", state(t, "job-1", "other", wire.StatusSucceeded, "49"), "1", 2},
		{"another job's", state(t, "job-2", "squares", wire.StatusSucceeded, "49"), "1", 2},
		{"not final", state(t, "job-1", "squares", wire.StatusFailed, "49"), "1", 2},
		{"not JSON", []byte("{"), "1", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ctx := context.Background()
			_, err := b.states.Put(ctx, "job-1", state(t, "job-1", "squares", wire.StatusRunning, ""))
			require.NoError(t, err)
			waiting := make(chan string, 1)
			b.c.onWaiting = func(id string) { waiting <- id }
			waited := make(chan *Job, 1)
			go func() {
				j, err := b.c.Wait(ctx, "job-1")
				if err != nil {
					t.Error(err)
				}
				waited <- j
			}()
			require.Equal(t, "job-1", <-waiting) // it read the job running
			// The store's truth, which the wait reads if it does not take
			// the end's state.
			_, err = b.states.Put(ctx, "job-1", state(t, "job-1", "squares", wire.StatusSucceeded, "1"))
			require.NoError(t, err)
			b.c.JobEndedWith("job-1", tc.ended)
			select {
			case j := <-waited:
				require.Equal(t, "job-1", j.ID)
				require.Equal(t, StatusSucceeded, j.Status)
				require.JSONEq(t, tc.want, string(j.Result))
			case <-time.After(10 * time.Second):
				t.Fatal("the wait was not woken by the job's end")
			}
			require.Equal(t, tc.reads, b.reads(), "reads of the job's state")
		})
	}
}
