package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// poolAnswer is conductord's answer to a pool command.
type poolAnswer struct {
	Hosts []struct {
		Host  string
		OK    bool
		Error string
	}
}

// ctl runs conductorctl against c and returns its output and exit error.
func (c *cluster) ctl(args ...string) (string, error) {
	c.t.Helper()
	p := start(c.t, "conductorctl", append([]string{"--server", c.url(""), "--token", c.token}, args...)...)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("conductorctl %v did not end within 30s", args)
	}
	return p.output(), p.err
}

// TestHTTP_UpgradeNeedsHostConsent: whoever sends it, over HTTP or with
// conductorctl, an upgrade runs only a command the host's own --pool flag
// allows (upgrade=), and a resize stays within the host's
// --max-pool-size (default 256). What is refused is never run, and the
// host says why in the answer and in its log.
func TestHTTP_UpgradeNeedsHostConsent(t *testing.T) {
	c := newCluster(t, withToken("s3cret"))
	dir := t.TempDir()
	v1 := filepath.Join(bin, "squares-worker")
	v2 := filepath.Join(dir, "squares-worker-v2")
	data, err := os.ReadFile(v1)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(v2, data, 0o755))
	marker := filepath.Join(dir, "pwned")
	evil := []string{"/bin/sh", "-c", "touch " + marker}

	w := c.workerd("h1",
		fmt.Sprintf("name=squares,count=2,upgrade=%s,cmd=%s", v2, v1),
		fmt.Sprintf("name=strict,count=1,cmd=%s", v1)) // no upgrade=: its cmd only
	c.waitWorkers("squares", 2)
	c.waitWorkers("strict", 1)

	// Refused over HTTP: a command the host's flags do not name.
	var answer poolAnswer
	require.Equal(t, 502, c.do("POST", "/v1/pools/squares/upgrade", mustJSON(t, map[string]any{"cmd": evil}), nil, &answer))
	require.Len(t, answer.Hosts, 1)
	require.False(t, answer.Hosts[0].OK)
	require.Equal(t, fmt.Sprintf(`upgrade refused by host h1: command "/bin/sh -c 'touch %s'" is not one this host allows for pool squares (its config allows: %q, %q)`, marker, v1, v2), answer.Hosts[0].Error)
	// A program that does exist is refused all the same.
	require.Equal(t, 502, c.do("POST", "/v1/pools/squares/upgrade", `{"cmd":"/bin/true"}`, nil, &answer))
	require.Contains(t, answer.Hosts[0].Error, `command "/bin/true" is not one this host allows for pool squares`)

	// Refused with conductorctl: a pool with no upgrade= allows no other command.
	out, err := c.ctl("upgrade", "strict", "--", v2)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, out)
	require.Equal(t, 4, exit.ExitCode(), out)
	require.Contains(t, out, fmt.Sprintf(`refused: upgrade refused by host h1: command %q is not one this host allows for pool strict (its config allows no command but its cmd %q: list others under the pool's upgrades)`, v2, v1))

	// Refused: a resize past the host's maximum pool size (within
	// conductord's, which refuses a larger one itself, with 400).
	require.Equal(t, 502, c.do("POST", "/v1/pools/squares/resize", `{"count":1000}`, nil, &answer))
	require.Equal(t, "resize refused by host h1: count 1000 is more than this host's maximum pool size, 256 (workerd --max-pool-size)", answer.Hosts[0].Error)
	require.Equal(t, 400, c.do("POST", "/v1/pools/squares/resize", `{"count":1000000000}`, nil, nil))

	// The host's log says why, each time.
	log := w.output()
	require.Equal(t, 2, strings.Count(log, `msg="command refused" host=h1 op=upgrade pool=squares err="upgrade refused by host h1:`), log)
	require.Equal(t, 1, strings.Count(log, `msg="command refused" host=h1 op=upgrade pool=strict err="upgrade refused by host h1:`), log)
	require.Contains(t, log, `msg="command refused" host=h1 op=resize pool=squares err="resize refused by host h1: count 1000 `)
	_, err = os.Stat(marker)
	require.ErrorIs(t, err, os.ErrNotExist, "the refused command never ran")

	// Allowed: the command the host's flag names, with conductorctl.
	out, err = c.ctl("upgrade", "squares", "--health", "200ms", "--", v2)
	require.NoError(t, err, out)
	require.Regexp(t, `(?m)^h1 +accepted$`, out)
	require.Eventually(t, func() bool {
		p := c.pool("squares")
		return len(p.Hosts) == 1 && len(p.Hosts[0].Cmd) == 1 && p.Hosts[0].Cmd[0] == v2 && p.Workers == 2 && p.State == "running"
	}, 30*time.Second, 20*time.Millisecond, "squares upgraded to %s: %+v", v2, c.pool("squares"))
	var j struct{ Status, Result any }
	require.Equal(t, 200, c.do("POST", "/v1/jobs/squares?wait=30s", "7", nil, &j))
	require.Equal(t, "succeeded", j.Status)
	require.EqualValues(t, 49, j.Result)
	// And back to the pool's cmd, over HTTP.
	require.Equal(t, 202, c.do("POST", "/v1/pools/squares/upgrade", mustJSON(t, map[string]any{"cmd": v1, "health": "200ms"}), nil, &answer))
	require.True(t, answer.Hosts[0].OK, answer.Hosts[0].Error)
}
