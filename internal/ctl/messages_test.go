package ctl

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// conductorctl send and broadcast go to the hosts as pool commands, with
// the message; a message that is not JSON is refused before it is sent.
func TestMessages_SendAndBroadcast(t *testing.T) {
	t.Parallel()
	b := setupLive(t)
	got := b.startHost(t, "web-1", "", "squares")
	out, err := runLive(t, b, "send", "web-1", "squares", "0", `{"reload":true}`)
	require.NoError(t, err, out)
	cmd := <-got
	require.Equal(t, "message", cmd.Op)
	require.Equal(t, 0, *cmd.Worker)
	require.JSONEq(t, `{"reload":true}`, string(cmd.Data))

	out, err = runLive(t, b, "broadcast", "--host", "web-1", "squares", `"all"`)
	require.NoError(t, err, out)
	cmd = <-got
	require.Equal(t, "broadcast", cmd.Op)
	require.JSONEq(t, `"all"`, string(cmd.Data))

	_, err = runLive(t, b, "send", "web-1", "squares", "0", `not json`)
	require.ErrorContains(t, err, "not JSON")
	_, err = runLive(t, b, "send", "web-1", "squares")
	require.ErrorContains(t, err, "usage: conductorctl send")
}
