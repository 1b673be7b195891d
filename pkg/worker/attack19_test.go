package worker_test

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/proto"
	"github.com/conductor-run/conductor/pkg/worker"
)

// Review 19: attacks on the SDK's framed payloads.

// sendFramed writes a framed job: its line, its payload as it is, and a
// newline, in one write.
func (b *testBundle) sendFramed(t *testing.T, id, typ, payload string) {
	t.Helper()
	_, err := io.WriteString(b.in, fmt.Sprintf(`{"op":"job","id":%q,"type":%q,"attempt":1,"size":%d}`, id, typ, len(payload))+"\n"+payload+"\n")
	require.NoError(t, err)
}

// A framed job over the channel's limit is answered, for good, naming the
// limit, rather than left running in workerd's eyes; the worker reads past
// it and takes the next job. A frame at the limit is taken.
func TestAttack19_SDKFrameOverTheLimit(t *testing.T) {
	t.Parallel()
	b := setup(t, handleByType, worker.WithMaxPayload(proto.DefaultMaxLine))
	b.sendFramed(t, "big", "raw", `"`+strings.Repeat("x", proto.DefaultMaxLine-1)+`"`)
	m := b.recv(t)
	require.Equal(t, proto.OpDone, m.Op)
	require.Equal(t, "big", m.ID)
	require.True(t, m.Permanent)
	require.Contains(t, m.Error, "over the channel's limit")

	at := `"` + strings.Repeat("y", proto.DefaultMaxLine-2) + `"`
	b.sendFramed(t, "at", "null", at)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "at"}, b.recv(t))
	b.sendJob(t, "next", "square", `3`)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "next", Result: json.RawMessage(`9`)}, b.recv(t))
}

// A framed payload that is not JSON: Decode says so, for good, naming the
// job; a handler that echoes the payload as its result (json.RawMessage,
// sent as it is) makes a result that cannot be sent, which fails the job
// rather than the worker or the channel; lines of ops inside a payload
// are never read as ops.
func TestAttack19_SDKFramedPayloadsNotJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, handleByType)

	b.sendFramed(t, "dec", "square", "{not json")
	m := b.recv(t)
	require.Equal(t, "dec", m.ID)
	require.True(t, m.Permanent)
	require.Contains(t, m.Error, "job dec: decode payload: ")

	b.sendFramed(t, "echo", "raw", "{not json\n{\"op\":\"shutdown\"}\n")
	m = b.recv(t)
	require.Equal(t, "echo", m.ID)
	require.NotEmpty(t, m.Error, "a result that is not JSON cannot be sent as one")
	require.Empty(t, m.Result)

	b.sendFramed(t, "lines", "raw", "[\n{\"op\":\"cancel\",\"id\":\"next\"},\n{\"op\":\"shutdown\"}\n]")
	m = b.recv(t)
	require.Equal(t, "lines", m.ID)
	require.Empty(t, m.Error)
	require.JSONEq(t, `[{"op":"cancel","id":"next"},{"op":"shutdown"}]`, string(m.Result))

	b.sendJob(t, "next", "square", `4`)
	require.Equal(t, proto.Message{Op: proto.OpDone, ID: "next", Result: json.RawMessage(`16`)}, b.recv(t), "still serving: no op in a payload was taken")
}
