package conductor_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestConductor_EventStreamNotCutByOneLargeEvent: one event larger than
// the event buffer (a worker's message of 1 MiB, or one that grows as it
// is made valid UTF-8: "\xffa", 2 bytes, becomes U+FFFD then "a", 4
// bytes) goes to a client that reads: the buffer bounds what a client
// leaves unread, not the size of one event.
func TestConductor_EventStreamNotCutByOneLargeEvent(t *testing.T) {
	for name, data := range map[string][]byte{
		// 600 KB on NATS, 1.2 MB once made valid UTF-8.
		"InvalidUTF8": []byte(`"` + strings.Repeat("\xffa", 300_000) + `"`),
		// Plain ASCII: a worker's message line may be 1 MiB + 64 KiB
		// (proto.DefaultMaxLine), and NATS takes 8 MiB, but the frame of
		// one such message is over the 1 MiB EventBuffer.
		"ASCII": []byte(`"` + strings.Repeat("x", 1<<20+32<<10) + `"`),
	} {
		t.Run(name, func(t *testing.T) { readOneEvent(t, data) })
	}
}

func readOneEvent(t *testing.T, data []byte) {
	url, nc, cuts := setupEvents(t, conductor.Config{}) // the defaults: 1 MiB, 10 s
	_, good := openStream(t, url, "")
	read := readEvents(t, good)
	publishEvent(t, nc, client.ScopeWorker, wire.Event{
		Time: eventTime, Kind: wire.EventWorkerMessage, Host: "a", Pool: "squares", Index: 7, PID: 42, Data: data,
	})
	select {
	case cut := <-cuts:
		t.Fatalf("a client reading as fast as it can was cut off by one event of %d bytes: %+v", len(data), cut)
	case n, ok := <-read:
		require.True(t, ok, "the reading stream ended")
		require.Equal(t, 7, n)
	case <-time.After(20 * time.Second):
		t.Fatal("the event never came")
	}
}
