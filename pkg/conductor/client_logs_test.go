package conductor_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// TestClient_Logs: Client.Logs reads what GET /v1/pools/{name}/logs
// does, over NATS: the tail, then, following, every new line with none
// lost or doubled at the seam; bad options and an unknown pool are errors.
func TestClient_Logs(t *testing.T) {
	t.Parallel()
	_, b := setup(t, conductor.Config{})
	startPrinter(t, b.nc, "h1", "printer", `i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.002; done`)
	cl, err := client.New(b.nc, client.Config{})
	require.NoError(t, err)

	var tail []client.LogLine
	require.Eventually(t, func() bool { // once it has printed 20 lines
		lines, err := cl.Logs(t.Context(), "printer", client.LogsOptions{Tail: 20, Host: "h1"})
		if err != nil {
			return false
		}
		tail = tail[:0]
		for l := range lines {
			tail = append(tail, l)
		}
		return len(tail) == 20
	}, 20*time.Second, 20*time.Millisecond)
	for _, l := range tail {
		require.Equal(t, "h1", l.Host)
		require.Equal(t, "printer", l.Pool)
		require.Equal(t, "stdout", l.Stream)
		require.NotZero(t, l.PID)
		require.Empty(t, l.Error)
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	lines, err := cl.Logs(ctx, "printer", client.LogsOptions{Tail: 10, Follow: true})
	require.NoError(t, err)
	first := <-lines
	n, err := strconv.Atoi(strings.TrimPrefix(first.Line, "line "))
	require.NoError(t, err, first.Line)
	for i := 1; i < 100; i++ {
		l, ok := <-lines
		require.True(t, ok)
		require.Equal(t, fmt.Sprintf("line %d", n+i), l.Line, "after %d lines", i)
	}
	cancel()
	for range lines { // closed once ctx ends
	}

	_, err = cl.Logs(t.Context(), "ghost", client.LogsOptions{})
	require.ErrorIs(t, err, client.ErrPoolNotFound)
	_, err = cl.Logs(t.Context(), "printer", client.LogsOptions{Tail: 1001})
	require.ErrorIs(t, err, client.ErrBadLogs)
}
