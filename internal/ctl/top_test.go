package ctl

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	pkgclient "github.com/conductor-run/conductor/pkg/client"
)

// On a terminal, top clears the screen, colours the states that need a
// look, keeps the columns aligned around the colours, and ends its lines
// with \r\n (the terminal is in raw mode for q).
func TestTop_DrawOnTerminal(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	c := &client{base: "http://h:7070", out: &out}
	at := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	prev := &topPoll{at: at, pools: []pkgclient.Pool{{Type: "squares", Succeeded: 100, Failed: 4}}}
	cur := &topPoll{
		at:    at.Add(2 * time.Second),
		hosts: []pkgclient.Host{{Host: "h1"}, {Host: "h2", Leaving: true}},
		pools: []pkgclient.Pool{
			{Type: "squares", State: "failed", Queued: 12, Running: 2, Workers: 2, Succeeded: 130, Failed: 10, Dead: 1},
			{Type: "mail", State: "draining"},
			{Type: "cubes", State: "running"},
		},
		dead: []pkgclient.Job{{ID: "j9", Type: "squares", Attempts: 3, UpdatedAt: at.Add(-time.Minute), Error: "boom\nstack"}},
	}
	c.draw(topView{interval: time.Second, tty: true}, prev, cur)
	s := out.String()
	require.True(t, strings.HasPrefix(s, ansiClear), "the screen cleared")
	require.NotContains(t, strings.ReplaceAll(s, "\r\n", ""), "\n", "every line ends \\r\\n")
	lines := strings.Split(s, "\r\n")
	require.Equal(t, ansiClear+"conductor http://h:7070 at 10:00:02, every 1s; q quits", lines[0])
	require.Equal(t, "hosts: 2 live, 1 leaving", lines[1])
	require.Equal(t, "TYPE     STATE     QUEUED  RUNNING  WORKERS  OK/S  FAILED/S  DEAD", lines[3])
	require.Equal(t, "squares  "+ansiRed+"failed    "+ansiReset+"12      2        2        15.0  3.0       1", lines[4])
	require.Equal(t, "mail     "+ansiYellow+"draining  "+ansiReset+"0       0        0        -     -         0", lines[5])
	require.Equal(t, "cubes    running   0       0        0        -     -         0", lines[6])
	require.Equal(t, "j9  squares  3         1m2s ago  boom stack", lines[10])

	// Not a terminal: no escapes at all.
	out.Reset()
	c.draw(topView{interval: time.Second, once: true}, prev, cur)
	require.NotContains(t, out.String(), "\x1b")
	require.NotContains(t, out.String(), "\r")
	require.Contains(t, out.String(), "squares  failed    12")
}
