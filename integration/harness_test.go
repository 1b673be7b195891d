// Package integration runs the real binaries (conductord, workerd, the
// example workers) as separate processes and checks them from the outside,
// through the HTTP API and NATS, as a user would.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// bin holds the binaries built once for the whole package.
var bin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: skipped with -short: these tests build and run the real binaries (make test runs them)")
		return 0
	}
	dir, err := os.MkdirTemp("", "conductor-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// CONDUCTOR_BUILD_TAGS=pprof builds binaries that serve profiles (see
	// internal/profiling), for measuring the job path.
	build := exec.Command("go", "build", "-tags", os.Getenv("CONDUCTOR_BUILD_TAGS"), "-o", dir+"/", "../cmd/...", "../examples/...", "./internal/...")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		return 1
	}
	bin = dir
	return m.Run()
}

// proc is one started binary. Its output goes to a file that is printed when
// the test fails.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    *os.File
	exited chan struct{}
	err    error // set before exited is closed
}

// start runs binary name with args, and stops it (SIGTERM, then SIGKILL of
// its process group after 20s) at cleanup.
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	require.NoError(t, err)
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// BENCH_ENV_<BINARY>="K=V ..." adds to one binary's environment, for
	// experiments: BENCH_ENV_WORKERD=GOMAXPROCS=1.
	if v := os.Getenv("BENCH_ENV_" + strings.ToUpper(name)); v != "" {
		cmd.Env = append(os.Environ(), strings.Fields(v)...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start(), "start %s", name)
	p := &proc{name: name, cmd: cmd, log: logf, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop(t, 20*time.Second)
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("--- %s output ---\n%s", name, tail(out, 8000))
		}
	})
	return p
}

// stop sends SIGTERM and waits for the process, then kills its group.
func (p *proc) stop(t testing.TB, grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		t.Errorf("%s did not exit within %s of SIGTERM", p.name, grace)
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr(t testing.TB) string { return freeAddrs(t, 1)[0] }

// freeAddrs returns n loopback addresses with ports free at the time of
// the call, and distinct: each is held until all are chosen (a port just
// closed may be handed out again at once).
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// cluster is one conductord and the workerds started against it.
type cluster struct {
	t         testing.TB
	data      string
	natsAddr  string
	httpAddr  string
	token     string
	conductor *proc
	client    *client.Client
}

type clusterOption func(*cluster, *[]string)

func withToken(tok string) clusterOption {
	return func(c *cluster, args *[]string) {
		c.token = tok
		*args = append(*args, "--token", tok)
	}
}

func withArgs(a ...string) clusterOption {
	return func(_ *cluster, args *[]string) { *args = append(*args, a...) }
}

// newCluster starts conductord on free ports and waits until it answers.
func newCluster(t testing.TB, opts ...clusterOption) *cluster {
	t.Helper()
	addrs := freeAddrs(t, 2)
	c := &cluster{t: t, data: t.TempDir(), natsAddr: addrs[0], httpAddr: addrs[1]}
	c.startConductor(opts...)
	return c
}

func (c *cluster) startConductor(opts ...clusterOption) {
	t := c.t
	t.Helper()
	args := []string{"--data", c.data, "--nats", c.natsAddr, "--http", c.httpAddr}
	// BENCH_CONDUCTORD_ARGS adds to conductord's arguments, for
	// experiments: BENCH_CONDUCTORD_ARGS="--sync always".
	args = append(args, strings.Fields(os.Getenv("BENCH_CONDUCTORD_ARGS"))...)
	for _, o := range opts {
		o(c, &args)
	}
	c.conductor = start(t, "conductord", args...)
	c.waitHealthy(30 * time.Second)
}

// waitHealthy waits until conductord answers /healthz with 200.
func (c *cluster) waitHealthy(limit time.Duration) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		resp, err := http.Get(c.url("/healthz"))
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == http.StatusOK
	}, limit, 20*time.Millisecond, "conductord did not become healthy")
}

// waitJobsDone waits until the workers of the live hosts have done n jobs
// in all (as of their last heartbeats), and returns the count per host.
func (c *cluster) waitJobsDone(n int64) map[string]int64 {
	c.t.Helper()
	perHost := map[string]int64{}
	require.Eventually(c.t, func() bool {
		clear(perHost)
		total := int64(0)
		for _, w := range c.workers() {
			perHost[w.Host] += w.JobsDone
			total += w.JobsDone
		}
		return total == n
	}, 10*time.Second, 50*time.Millisecond, "jobs done per host: %v", perHost)
	return perHost
}

func (c *cluster) natsURL() string { return "nats://" + c.natsAddr }

func (c *cluster) url(path string) string { return "http://" + c.httpAddr + path }

// workerd starts a workerd with the given pools (the --pool specs).
func (c *cluster) workerd(host string, pools ...string) *proc {
	args := []string{"--conductor", c.natsURL(), "--host-id", host}
	if c.token != "" {
		args = append(args, "--token", c.token)
	}
	for _, p := range pools {
		args = append(args, "--pool", p)
	}
	return start(c.t, "workerd", args...)
}

// squares is the pool spec of n squares workers.
func squares(n int) string {
	return fmt.Sprintf("name=squares,count=%d,cmd=%s", n, filepath.Join(bin, "squares-worker"))
}

// goClient returns a Go client of the cluster, made once.
func (c *cluster) goClient() *client.Client {
	c.t.Helper()
	if c.client == nil {
		var err error
		c.client, err = client.Connect(c.natsURL(), client.Config{})
		require.NoError(c.t, err)
		c.t.Cleanup(c.client.Close)
	}
	return c.client
}

// ended reads job id until it has ended, and returns its final state. A
// job published straight to the job stream has no state until a worker
// takes it, and Client.Wait finds none before then.
func (c *cluster) ended(id string) *client.Job {
	c.t.Helper()
	var j *client.Job
	require.Eventually(c.t, func() bool {
		var err error
		j, err = c.goClient().Job(context.Background(), id)
		return err == nil && j.Status.Final()
	}, time.Minute, 20*time.Millisecond, "job %s ended", id)
	return j
}

// do calls the HTTP API and decodes its JSON answer into out (if not nil).
func (c *cluster) do(method, path string, body string, hdr map[string]string, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.url(path), strings.NewReader(body))
	require.NoError(c.t, err)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	if out != nil {
		require.NoError(c.t, json.Unmarshal(raw, out), "decode %s %s: %s", method, path, raw)
	}
	return resp.StatusCode
}

// workers lists /v1/workers.
func (c *cluster) workers() []client.Worker {
	var ws []client.Worker
	c.do(http.MethodGet, "/v1/workers", "", nil, &ws)
	return ws
}

// waitWorkers waits until n workers of pool are ready or busy.
func (c *cluster) waitWorkers(pool string, n int) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		up := 0
		for _, w := range c.workers() {
			if w.Pool == pool && (w.State == "ready" || w.State == "busy") {
				up++
			}
		}
		return up >= n
	}, 30*time.Second, 20*time.Millisecond, "want %d %s workers up", n, pool)
}

// pool returns the /v1/pools entry of typ.
func (c *cluster) pool(typ string) client.Pool {
	var ps []client.Pool
	c.do(http.MethodGet, "/v1/pools", "", nil, &ps)
	for _, p := range ps {
		if p.Type == typ {
			return p
		}
	}
	return client.Pool{Type: typ}
}

// submitMany queues payloads 0..n-1 of typ over NATS with a few concurrent
// submitters and returns the job ids by payload.
func (c *cluster) submitMany(ctx context.Context, typ string, n int) []string {
	c.t.Helper()
	ids := make([]string, n)
	cl := c.goClient()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				id, err := cl.Submit(ctx, typ, i)
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(c.t, err)
	}
	return ids
}

// mustJSON encodes v.
func mustJSON(t testing.TB, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(bytes.TrimSpace(b))
}
