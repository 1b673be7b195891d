package conductor_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// Gaps an outside review found that stay (docs/security.md, "Not yet"):
// each test pins the gap as it stands, and fails once it is closed.

// TestKnownGap_OneHostHoldsEveryPullSlot pins a gap: the consumers of a
// type are shared by its hosts, with MaxWaiting 4,096 pull requests
// waiting at once, all hosts together. h1 (squares) sends 4,096 pull
// requests of one job each, waiting a minute (a few hundred KB, no rate):
// h3, another host of squares, is refused ("Exceeded MaxWaiting") while
// they wait, and a new job goes to h1. Nothing gives each host a share
// of the waiting pulls. When this fails, the gap is closed: turn the
// test around (h3's pull waits for a job like any other) and update the
// docs.
func TestKnownGap_OneHostHoldsEveryPullSlot(t *testing.T) {
	t.Parallel()
	rc := startClusterOf(t, conductor.Config{},
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
		auth.Credential{ID: "h3", Role: auth.Host, Types: []string{"squares"}},
	)
	sp, _ := subject.New("default")
	h1, _ := rc.connectAs(t, "h1")
	h3, _ := rc.connectAs(t, "h3")
	require.NoError(t, hostsvc.NewCaller(h1, sp).Consumers(t.Context(), "squares", 30*time.Second))
	consumer := sp.ConsumerAt("squares", "normal")
	next := auth.HostAPIPrefix + ".CONSUMER.MSG.NEXT." + sp.JobStream() + "." + consumer

	got := make(chan *nats.Msg, 8192)
	inbox := h1.NewInbox()
	_, err := h1.ChanSubscribe(inbox+".*", got)
	require.NoError(t, err)
	const pulls = 4096 // the consumer's MaxWaiting
	for i := range pulls {
		require.NoError(t, h1.PublishRequest(next, inbox+"."+strconv.Itoa(i), []byte(`{"batch":1,"expires":60000000000}`)))
	}
	require.NoError(t, h1.Flush())
	root, _ := rc.connectAs(t, "root")
	rjs, err := jetstream.New(root)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cons, err := rjs.Consumer(t.Context(), sp.JobStream(), consumer)
		return err == nil && cons.CachedInfo().NumWaiting >= pulls
	}, 10*time.Second, 10*time.Millisecond, "h1's pulls wait on the consumer")

	m, err := h3.Request(next, []byte(`{"batch":1,"expires":2000000000}`), 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "409", m.Header.Get("Status"),
		"h3's pull was not refused while h1's %d wait (%s %s): the gap is closed: turn this test around and update docs/security.md",
		pulls, m.Header.Get("Status"), m.Header.Get("Description"))
	require.Contains(t, m.Header.Get("Description"), "Exceeded MaxWaiting",
		"the gap is closed: turn this test around and update docs/security.md")

	// A new job goes to one of h1's pulls.
	rootc, err := client.New(root, client.Config{})
	require.NoError(t, err)
	id, err := rootc.Submit(t.Context(), "squares", 1)
	require.NoError(t, err)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-got:
			if m.Header.Get("Status") == "" && m.Header.Get(names.HeaderJobID) == id {
				return
			}
		case <-deadline:
			t.Fatal("the new job did not go to h1's pulls: the gap is closed: turn this test around and update docs/security.md")
		}
	}
}

// TestKnownGap_AnonymousConnectionsLockOutOperators pins a gap: a
// conductord with credentials, its HTTP API at the default
// --max-http-conns (4,096). Someone with no credential opens 4,096
// connections and sends one GET /healthz on each (no token needed), then
// leaves them idle: they are kept 2 minutes (IdleTimeout). An operator's
// call waits for a slot the whole time: the API is unusable by those
// with credentials. When this fails, the gap is closed (a cap per
// address, anonymous connections closed first when full, or a shorter
// idle time past a share of the slots): turn the test around (the
// operator is served) and update the docs.
func TestKnownGap_AnonymousConnectionsLockOutOperators(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials.json")
	tok, err := auth.Add(creds, auth.Credential{ID: "ops", Role: auth.Operator}, false)
	require.NoError(t, err)
	c, err := conductor.New(conductor.Config{DataDir: dir, NATSListen: "127.0.0.1:0", HTTPListen: "127.0.0.1:0", MemoryStorage: true, Credentials: creds})
	require.NoError(t, err)
	require.NoError(t, c.Start(t.Context()))
	t.Cleanup(c.Stop)

	const conns = 4096 // --max-http-conns
	readers := make([]*bufio.Reader, conns)
	for i := range conns {
		conn, err := net.Dial("tcp", c.HTTPAddr())
		require.NoError(t, err, "connection %d", i)
		t.Cleanup(func() { conn.Close() })
		_, err = fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		require.NoError(t, err)
		readers[i] = bufio.NewReader(conn)
	}
	// Each connection answered holds a slot, idle.
	for i, r := range readers {
		resp, err := http.ReadResponse(r, nil)
		require.NoError(t, err, "connection %d", i)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}

	// The slots stay held 2 minutes: the operator's call waits a second
	// of them, then gives up.
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.HTTPAddr()+"/v1/pools", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
	}
	require.ErrorIs(t, err, context.DeadlineExceeded,
		"the operator was served while %d anonymous connections idle: the gap is closed: turn this test around and update docs/security.md", conns)
}
