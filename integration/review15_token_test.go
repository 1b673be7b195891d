package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReview15_WorkersCannotReadTheTokenFromWorkerd: workers no longer
// inherit CONDUCTOR_TOKEN, but they run as workerd's user, as its children:
// a job's code reads the token from /proc/<workerd>/environ (as it could
// read the --token-file that /proc/<workerd>/cmdline names). docs/security.md
// says "a job's code, which may be anyone's, does not hold the token".
func TestReview15_WorkersCannotReadTheTokenFromWorkerd(t *testing.T) {
	c := newCluster(t, withToken("s3cret-review15"))
	dir := t.TempDir()
	out := filepath.Join(dir, "stolen")
	script := filepath.Join(dir, "spy.sh")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n"+
		"tr '\\0' '\\n' < /proc/$PPID/environ | grep '^CONDUCTOR_TOKEN=' > "+out+".tmp; mv "+out+".tmp "+out+"\nexec sleep 600\n"), 0o755))
	t.Setenv("CONDUCTOR_TOKEN", "s3cret-review15") // workerd's token from its environment, not --token
	start(t, "workerd", "--conductor", c.natsURL(), "--host-id", "h1", "--pool", "name=spy,protocol=none,count=1,cmd="+script)
	var stolen []byte
	require.Eventually(t, func() bool {
		var err error
		stolen, err = os.ReadFile(out)
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "the worker ran")
	require.Empty(t, strings.TrimSpace(string(stolen)), "a worker read workerd's token from /proc/$PPID/environ")
}
