package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
)

// From the moment workerd reads an answer while the worker is ready, it
// counts the next queued job as running: a stop must run that job and
// answer it, and leave the rest of the queue. The two ways a stop can come
// between jobs are set up here directly: after a job's answer, and while
// jobs are queued to an idle worker that has not started the first.
func TestServer_StopBetweenJobsRunsTheJobWorkerdCountsAsRunning(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		setup func(s *server)
	}{
		{"after an answer", func(s *server) {
			s.mu.Lock()
			s.queue = []proto.Message{job("j1"), job("j2")}
			s.job, s.cancel = &Job{ID: "j0"}, func(error) {}
			s.mu.Unlock()
			s.finish(outcome{id: "j0"})
		}},
		{"before the first", func(s *server) {
			s.mu.Lock()
			s.queue = []proto.Message{job("j1"), job("j2")}
			s.mu.Unlock()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, ran, written := recordingServer(t)
			s.lateWait = time.Minute // a stop that found a job to run waits for no late one
			tc.setup(s)
			s.stop(nil)
			served := make(chan error, 1)
			go func() { served <- s.serve() }()
			select {
			case err := <-served:
				require.NoError(t, err)
			case <-time.After(10 * time.Second):
				t.Fatal("the run waited for a late job after a stop that found a job to run")
			}
			got := written()
			require.Equal(t, []string{"j1"}, *ran)
			require.Contains(t, got, proto.Message{Op: proto.OpDone, ID: "j1"})
			require.Contains(t, got, proto.Message{Op: proto.OpBusy})
			require.NotContains(t, got, proto.Message{Op: proto.OpDone, ID: "j2"})
		})
	}
}

// A job workerd wrote before it read the busy of a stop of the worker's
// own, while the worker was idle, is the one workerd counts as running: it
// runs and is answered, and the run then ends. A second one is refused, and
// after a hard stop or a shutdown none is taken.
func TestServer_JobAfterOwnStopRuns(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		stop func(s *server)
		ran  []string
	}{
		{"graceful", func(s *server) { s.stop(nil) }, []string{"late"}},
		{"hard", func(s *server) { s.stop(errHardStop) }, nil},
		{"shutdown", func(s *server) { s.handle(proto.Message{Op: proto.OpShutdown}) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, ran, written := recordingServer(t)
			s.lateWait = time.Minute // the test, not the clock, brings the job
			tc.stop(s)
			served := make(chan error, 1)
			go func() { served <- s.serve() }()
			if tc.ran != nil {
				require.Eventually(t, func() bool {
					s.mu.Lock()
					defer s.mu.Unlock()
					return s.idle
				}, 10*time.Second, time.Millisecond, "the runner does not wait for a late job")
			}
			// As the reader does: handle, flush an answer, wake the runner.
			for _, id := range []string{"late", "later"} {
				if s.handle(job(id)) {
					s.flush()
				}
				s.mu.Lock()
				s.wakeLocked()
				s.mu.Unlock()
			}
			require.NoError(t, <-served)
			got := written()
			require.Equal(t, tc.ran, *ran)
			if len(tc.ran) > 0 {
				require.Contains(t, got, proto.Message{Op: proto.OpDone, ID: "late"})
			}
			require.NotContains(t, got, proto.Message{Op: proto.OpDone, ID: "later"})
		})
	}
}

// job is a job message for the stop tests.
func job(id string) proto.Message {
	return proto.Message{Op: proto.OpJob, ID: id, Type: "t", Payload: []byte("1"), Attempt: 1}
}

// recordingServer returns a server whose handler records the ids of the
// jobs it runs, and a function that ends its output and returns what it
// wrote; call it once serve has returned.
func recordingServer(t *testing.T) (s *server, ran *[]string, written func() []proto.Message) {
	t.Helper()
	outR, outW := io.Pipe()
	msgs := make(chan proto.Message, 8)
	go func() {
		defer close(msgs)
		r := proto.NewReader(outR, 0)
		for {
			m, err := r.Read()
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	ran = new([]string)
	s = newServer(context.Background(), func(_ context.Context, j *Job) (any, error) {
		*ran = append(*ran, j.ID)
		return nil, nil
	}, outW, slog.New(slog.DiscardHandler), 4, 0)
	return s, ran, func() []proto.Message {
		require.NoError(t, outW.Close())
		var got []proto.Message
		for m := range msgs {
			got = append(got, m)
		}
		return got
	}
}
