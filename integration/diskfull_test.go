package integration

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestChaos_DiskFull is the chaos run's full-disk phase: conductord runs on
// a small tmpfs (CHAOS_DISK_SIZE, default 32m) and, in each of
// CHAOS_DISK_ROUNDS rounds (default 2), careful clients submit squares jobs
// with no worker until conductord refuses them, then a host drains the
// queue. It checks that a refusal is an error the submitter sees (not a
// job queued and lost), that /healthz says full while jobs are refused and
// ok once the queue drained, that every job whose submission was accepted
// ends with its own result, and that a job is taken afterwards; it reports
// the figures of each round. The second round fills the disk that the
// first one's states and archive took room on, with what the first one
// taught the storage guard about the jobs' drain.
//
// It needs root, to mount a tmpfs: it runs in make test as root (as CI
// does), and is skipped, saying so, otherwise, unless CHAOS_DISK=1 asks
// for it (make chaos CHAOS_DISK=1), which makes it fail instead.
func TestChaos_DiskFull(t *testing.T) {
	size := cmp.Or(os.Getenv("CHAOS_DISK_SIZE"), "32m")
	dir := mountTmpfs(t, size)
	rounds := 2
	if v := os.Getenv("CHAOS_DISK_ROUNDS"); v != "" {
		var err error
		rounds, err = strconv.Atoi(v)
		require.NoError(t, err, "CHAOS_DISK_ROUNDS")
	}
	noOrphansAtEnd(t, bin+"/squares-worker")

	addrs := freeAddrs(t, 2)
	c := &cluster{t: t, data: dir, natsAddr: addrs[0], httpAddr: addrs[1]}
	c.startConductor()
	cl, err := client.Connect(c.natsURL(), client.Config{}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	var host *proc
	for round := 1; round <= rounds; round++ {
		if host != nil {
			host.stop(t, 20*time.Second) // the next round fills with no worker
		}
		accepted := fillDisk(t, c, cl, dir, size, round)
		host = c.workerd(fmt.Sprintf("drain-%d", round), squares(2))
		drainDisk(t, c, cl, round, accepted)
	}

	// Afterwards: is a job taken again?
	actx, acancel := context.WithTimeout(context.Background(), time.Minute)
	defer acancel()
	j, err := cl.SubmitAndWait(actx, "squares", 7)
	require.NoError(t, err, "no job is taken after the drain")
	t.Logf("after the drain, a new job: %s %s", j.Status, j.Result)
}

// mountTmpfs mounts a tmpfs of size on a new directory, unmounted at
// cleanup, or skips the test, saying why, when it cannot and CHAOS_DISK=1
// does not ask for it.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	asked := os.Getenv("CHAOS_DISK") == "1"
	if os.Geteuid() != 0 {
		require.False(t, asked, "CHAOS_DISK=1 needs root, to mount a tmpfs")
		t.Skip("the full-disk phase needs root, to mount a tmpfs (CI runs as root; CHAOS_DISK=1 makes this a failure)")
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		require.False(t, asked, "CHAOS_DISK=1: mount a tmpfs: %v: %s", err, out)
		t.Skipf("the full-disk phase cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fillDisk submits squares jobs from 8 careful submitters, each until its
// first refusal, within 3 minutes, checks that /healthz then says full,
// and returns the ids of the jobs accepted by number.
func fillDisk(t *testing.T, c *cluster, cl *client.Client, dir, size string, round int) map[int]string {
	t.Helper()
	began := time.Now()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		accepted = map[int]string{}
		refusals []string
		wg       sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				id, err := cl.Submit(ctx, "squares", i, client.WithIdempotencyKey(fmt.Sprintf("disk-%d-%d", round, i)))
				mu.Lock()
				if err != nil {
					refusals = append(refusals, fmt.Sprintf("job %d after %s: %v", i, time.Since(began).Round(time.Millisecond), err))
					mu.Unlock()
					return
				}
				accepted[i] = id
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	code, health := healthz(c)
	t.Logf("round %d: full disk (%s tmpfs): %d jobs accepted, %d submitters refused within %s; %s used; /healthz: %d %s",
		round, size, len(accepted), len(refusals), took.Round(time.Millisecond), mib(dirBytes(dir)), code, health)
	for _, r := range refusals {
		t.Logf("refused: %s", r)
	}
	require.NotEmpty(t, refusals, "conductord took every job for 3 minutes")
	require.Equal(t, http.StatusServiceUnavailable, code, "/healthz while jobs are refused: %s", health)
	var h struct{ Status string }
	require.NoError(t, json.Unmarshal([]byte(health), &h), health)
	require.Equal(t, "full", h.Status, health)
	return accepted
}

// drainDisk waits for every job accepted to succeed with its own result,
// the host started, and for /healthz to say ok.
func drainDisk(t *testing.T, c *cluster, cl *client.Client, round int, accepted map[int]string) {
	t.Helper()
	began := time.Now()
	wctx, wcancel := context.WithTimeout(context.Background(), drainFor)
	defer wcancel()
	var ended, wrong, notEnded atomic.Int64
	var firstBad atomic.Value
	jobs := make(chan int, len(accepted))
	for i := range accepted {
		jobs <- i
	}
	close(jobs)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range jobs {
				j, err := cl.Wait(wctx, accepted[i])
				switch {
				case err != nil:
					notEnded.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("job %d (%s): %v", i, accepted[i], err))
				case j.Status != client.StatusSucceeded || strings.TrimSpace(string(j.Result)) != strconv.Itoa(i*i):
					wrong.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("job %d (%s): %s %s %s", i, accepted[i], j.Status, j.Result, j.Error))
				default:
					ended.Add(1)
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(began)
	var code int
	var health string
	ok := assert.Eventually(t, func() bool {
		code, health = healthz(c)
		return code == http.StatusOK
	}, 30*time.Second, 50*time.Millisecond)
	t.Logf("round %d: drain: %d of %d accepted jobs succeeded with their result in %s, %d ended otherwise, %d did not end within %s; first: %v; /healthz: %d %s",
		round, ended.Load(), len(accepted), took.Round(time.Millisecond), wrong.Load(), notEnded.Load(), drainFor, firstBad.Load(), code, health)
	require.Zero(t, wrong.Load()+notEnded.Load(), "accepted jobs that did not succeed once the queue drained: %v", firstBad.Load())
	require.True(t, ok, "/healthz once the queue drained: %d %s", code, health)
}

// drainFor bounds the drain: the accepted jobs take well under a minute
// to run on a healthy store.
const drainFor = 90 * time.Second

// healthz returns conductord's /healthz status code and body, on one line.
func healthz(c *cluster) (int, string) {
	resp, err := http.Get(c.url("/healthz"))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 2000))
	return resp.StatusCode, strings.Join(strings.Fields(string(b)), " ")
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }
