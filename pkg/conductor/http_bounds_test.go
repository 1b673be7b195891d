package conductor_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestHTTP_StreamsAndBatchReadsBounded: past MaxEventStreams streams, or
// MaxBatchReads bodies being read, a caller is answered 503 at once with
// Retry-After; once one ends, the next is served.
func TestHTTP_StreamsAndBatchReadsBounded(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{MaxEventStreams: 2, MaxBatchReads: 1})
	// The slow batch's first read of its body tells that it holds the
	// slot: a batch polled before that could take the slot first.
	reading := make(chan struct{})
	var once sync.Once
	h := c.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Slow") != "" {
			r.Body = &firstRead{ReadCloser: r.Body, fn: func() { once.Do(func() { close(reading) }) }}
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	open := func() *http.Response {
		resp, err := http.Get(srv.URL + "/v1/events")
		require.NoError(t, err)
		return resp
	}
	a, b := open(), open()
	require.Equal(t, http.StatusOK, a.StatusCode)
	require.Equal(t, http.StatusOK, b.StatusCode)
	third := open()
	body, _ := io.ReadAll(third.Body)
	third.Body.Close()
	require.Equal(t, http.StatusServiceUnavailable, third.StatusCode)
	require.Equal(t, "1", third.Header.Get("Retry-After"))
	require.Contains(t, string(body), "2 event and log streams at once")
	a.Body.Close()
	require.Eventually(t, func() bool {
		r := open()
		defer r.Body.Close()
		return r.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond)
	b.Body.Close()

	// A batch whose body comes slowly holds the one batch slot.
	pr, pw := io.Pipe()
	t.Cleanup(func() { _ = pw.Close() }) // ends the slow batch if the test fails first: the server's Close waits for it
	slow := make(chan *http.Response, 1)
	go func() {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/batches/squares", pr)
		if err == nil {
			req.Header.Set("X-Slow", "1")
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				slow <- resp
			}
		}
		close(slow)
	}()
	_, err := pw.Write([]byte("1\n"))
	require.NoError(t, err)
	select {
	case <-reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow batch's body was never read")
	}
	require.Eventually(t, func() bool {
		code, body := post(t, srv, "/v1/batches/squares", "2\n")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "1 batches being read at once")
	}, 10*time.Second, 10*time.Millisecond)
	require.NoError(t, pw.Close())
	resp := <-slow
	require.NotNil(t, resp)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	code, body2 := post(t, srv, "/v1/batches/squares", "2\n")
	require.Equal(t, http.StatusAccepted, code, body2)
}

// firstRead calls fn on its first Read.
type firstRead struct {
	io.ReadCloser
	fn func()
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.fn()
	return f.ReadCloser.Read(p)
}

// TestHTTP_ConnectionsBounded: past MaxHTTPConns connections, a new one
// is served only once another closes.
func TestHTTP_ConnectionsBounded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", MemoryStorage: true, MaxHTTPConns: 2})
	require.NoError(t, err)
	require.NoError(t, c.Start(t.Context()))
	t.Cleanup(c.Stop)
	var idle []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", c.HTTPAddr())
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		idle = append(idle, conn)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + c.HTTPAddr() + "/healthz")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	require.Never(t, func() bool { return len(done) > 0 }, 300*time.Millisecond, 10*time.Millisecond,
		"a third connection was served while two were open")
	idle[0].Close()
	select {
	case code := <-done:
		require.Equal(t, http.StatusOK, code)
	case <-time.After(10 * time.Second):
		t.Fatal("the third connection was not served once one closed")
	}
}

// TestHTTP_JobTypesBounded: past MaxJobTypes types, a job of a new type
// is refused with 400 and nothing queued; known types are still served.
func TestHTTP_JobTypesBounded(t *testing.T) {
	t.Parallel()
	c, _ := setup(t, conductor.Config{MaxJobTypes: 2})
	srv := serve(t, c)
	for _, typ := range []string{"a", "b", "a"} {
		code, body := post(t, srv, "/v1/jobs/"+typ, "1")
		require.Equal(t, http.StatusAccepted, code, body)
	}
	code, body := post(t, srv, "/v1/jobs/c", "1")
	require.Equal(t, http.StatusBadRequest, code)
	require.Contains(t, body, `job type \"c\" is new, and conductord has 2 job types, its most (--max-job-types); nothing was queued`)
	code, body = post(t, srv, "/v1/batches/c", "1\n")
	require.Equal(t, http.StatusBadRequest, code, body)
	code, _ = get(t, srv, "/v1/jobs?type=c")
	require.Equal(t, http.StatusOK, code)
}

// TestConductor_JobStreamTakesEveryTypesConsumers: the job stream takes a
// consumer per priority for every type --max-job-types allows; with
// nats-server's default of 1,000 consumers a stream it refused the 334th
// type's.
func TestConductor_JobStreamTakesEveryTypesConsumers(t *testing.T) {
	t.Parallel()
	const types = 400
	_, bundle := setup(t, conductor.Config{MaxJobTypes: types, MemoryStorage: true})
	ctx := t.Context()
	stream, err := bundle.js.Stream(ctx, "conductor-default-jobs")
	require.NoError(t, err)
	for i := range types {
		for _, prio := range []string{"high", "normal", "low"} {
			typ := fmt.Sprintf("t%d", i)
			_, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
				Durable: prio + "-" + typ, FilterSubject: "conductor.default.jobs." + typ + map[string]string{"high": ".high", "normal": "", "low": ".low"}[prio],
				AckPolicy: jetstream.AckExplicitPolicy, MemoryStorage: true,
			})
			require.NoError(t, err, "type %d of %d, priority %s", i+1, types, prio)
		}
	}
}
