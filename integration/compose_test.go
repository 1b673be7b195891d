package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// dockerAbsent says why the Docker tests cannot run here, or "" if they can.
func dockerAbsent() string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "docker is not installed"
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		return "docker-compose is not installed"
	}
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		return "the Docker engine does not answer: " + strings.TrimSpace(string(tail(out, 300)))
	}
	return ""
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %s:\n%s", name, strings.Join(args, " "), out)
	return string(out)
}

// TestCompose_TwoHosts runs docker-compose.yml: conductord and two workerd
// hosts in containers on a private network, the image built FROM scratch
// from the static binaries.
func TestCompose_TwoHosts(t *testing.T) {
	if why := dockerAbsent(); why != "" {
		t.Skip("needs Docker: " + why)
	}
	// The image, from the binaries TestMain built (static: CGO_ENABLED=0).
	ctxDir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(ctxDir, "bin"), 0o755))
	for _, b := range []string{"conductord", "workerd", "conductorctl", "squares-worker", "noop-worker"} {
		data, err := os.ReadFile(filepath.Join(bin, b))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(ctxDir, "bin", b), data, 0o755))
	}
	dockerfile, err := os.ReadFile("../Dockerfile")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), dockerfile, 0o644))
	project := fmt.Sprintf("conductortest%d", os.Getpid())
	image := "conductor:" + project
	run(t, ctxDir, nil, "docker", "build", "-q", "-t", image, ".")
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", image).Run() })

	_, port, _ := net.SplitHostPort(freeAddr(t))
	// The cluster's credentials, as make compose-up issues them.
	secrets := t.TempDir()
	run(t, "..", []string{"CONDUCTORD=" + filepath.Join(bin, "conductord")}, "./scripts/compose-creds.sh", secrets)
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(secrets, name))
		require.NoError(t, err)
		return strings.TrimSpace(string(data))
	}
	token := read("operator.token")
	env := []string{"CONDUCTOR_IMAGE=" + image, "CONDUCTOR_HTTP_PORT=" + port, "CONDUCTOR_SECRETS=" + secrets}
	compose := func(args ...string) string {
		return run(t, "..", env, "docker-compose", append([]string{"-p", project}, args...)...)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(compose("logs", "--tail", "40"))
		}
		compose("down", "-v", "--remove-orphans", "-t", "20")
	})
	compose("up", "-d")

	c := &cluster{t: t, httpAddr: "127.0.0.1:" + port, token: token}
	c.waitHealthy(time.Minute)
	c.waitWorkers("squares", 4)
	// The submitter's token queues jobs and reads them, and no more.
	sub := &cluster{t: t, httpAddr: c.httpAddr, token: read("submitter.token")}
	var queued struct{ ID string }
	require.Equal(t, http.StatusAccepted, sub.do(http.MethodPost, "/v1/jobs/squares", "3", nil, &queued))
	require.Equal(t, http.StatusForbidden, sub.do(http.MethodGet, "/v1/pools", "", nil, nil))
	require.Equal(t, http.StatusUnauthorized, (&cluster{t: t, httpAddr: c.httpAddr}).do(http.MethodGet, "/v1/pools", "", nil, nil))

	const n = 200
	for i := range n - 1 { // the submitter's was one
		var id struct{ ID string }
		require.Equal(t, http.StatusAccepted, c.do(http.MethodPost, "/v1/jobs/squares", fmt.Sprint(i), nil, &id))
	}
	require.Eventually(t, func() bool { return c.pool("squares").Succeeded == n }, time.Minute, 50*time.Millisecond)
	perHost := c.waitJobsDone(n)
	require.Positive(t, perHost["host-a"], "host-a ran no job")
	require.Positive(t, perHost["host-b"], "host-b ran no job")

	// A host that stops says so: its workers leave /v1/workers at once, and
	// the other host takes the jobs.
	compose("stop", "-t", "30", "host-a")
	require.Eventually(t, func() bool {
		for _, w := range c.workers() {
			if w.Host == "host-a" {
				return false
			}
		}
		return true
	}, 10*time.Second, 50*time.Millisecond)
	var j client.Job
	require.Equal(t, http.StatusOK, c.do(http.MethodPost, "/v1/jobs/squares?wait=10s", "12", nil, &j))
	require.JSONEq(t, "144", string(j.Result))
	require.Equal(t, "host-b", j.History[0].Host)
}
