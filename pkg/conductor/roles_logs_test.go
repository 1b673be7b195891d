package conductor_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/wire"
)

// TestRoles_LogTail: an operator asks a host for the tail of its logs and
// the host, on its own credential, answers; another host's credential
// neither hears the request nor reads the host's lines, so it cannot
// answer for it; an operator cannot take a host's requests either.
func TestRoles_LogTail(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	startHost(t, rc, "h1", "squares")

	ops, _ := rc.connectAs(t, "ops")
	data, _ := json.Marshal(wire.LogTailRequest{Pool: "squares", Tail: 10})
	var sub *nats.Subscription
	var m *nats.Msg
	require.Eventually(t, func() bool { // once h1 takes its requests
		reply := subject.ControlReply(ops.NewInbox())
		var err error
		if sub, err = ops.SubscribeSync(reply); err != nil {
			return false
		}
		if ops.PublishRequest("conductor.default.tail.h1", reply, data) != nil {
			return false
		}
		m, err = sub.NextMsg(5 * time.Second)
		return err == nil && len(m.Data) > 0 // not the server's "no responders"
	}, 20*time.Second, 20*time.Millisecond)
	var ans wire.LogTail
	require.NoError(t, json.Unmarshal(m.Data, &ans))
	require.Equal(t, "h1", ans.Host)
	require.Empty(t, ans.Error)
	require.NotEmpty(t, ans.Epoch)
	noneOf(t, sub, func(*nats.Msg) bool { return true }, "one answer, h1's")

	unheardSub(t, rc, "h2", "conductor.default.tail.h1", "conductor.default.tail.h1")
	unheardSub(t, rc, "h2", "conductor.default.tail.*", "conductor.default.tail.h1")
	unheardSub(t, rc, "h2", "conductor.default.logs.h1.squares", "conductor.default.logs.h1.squares")
	unseenPub(t, rc, "h2", "conductor.default.tail.h1")
	refusedSub(t, rc, "ops", "conductor.default.tail.h1")
	refusedPub(t, rc, "web", "conductor.default.tail.h1")
}
