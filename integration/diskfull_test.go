package integration

import (
	"cmp"
	"context"
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
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestChaos_DiskFull is the chaos run's full-disk phase, run only with
// CHAOS_DISK=1 (it needs root, to mount a tmpfs): conductord runs on a
// small tmpfs (CHAOS_DISK_SIZE, default 32m) with no worker, careful
// clients submit squares jobs until conductord refuses them, then a host
// drains the queue. It checks that a refusal is an error the submitter
// sees (not a job queued and lost), that every job whose submission was
// accepted ends with its own result once the queue drains, and reports
// what conductord's health said and whether it takes jobs again
// afterwards.
func TestChaos_DiskFull(t *testing.T) {
	if os.Getenv("CHAOS_DISK") != "1" {
		t.Skip("the full-disk phase runs only with CHAOS_DISK=1 (root, mount): make chaos CHAOS_DISK=1")
	}
	size := cmp.Or(os.Getenv("CHAOS_DISK_SIZE"), "32m")
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	require.NoError(t, err, "CHAOS_DISK=1 needs root and mount: %s", out)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	noOrphansAtEnd(t, bin+"/squares-worker")

	c := &cluster{t: t, data: dir, natsAddr: freeAddr(t), httpAddr: freeAddr(t)}
	c.startConductor()
	cl, err := client.Connect(c.natsURL(), client.Config{}, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	// Fill: 8 submitters, each until its first refusal, within 3 minutes.
	began := time.Now()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		accepted = map[int]string{}
		refusals []string
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				id, err := cl.Submit(ctx, "squares", i, client.WithIdempotencyKey("disk-"+strconv.Itoa(i)))
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
	health := healthz(c)
	t.Logf("full disk (%s tmpfs): %d jobs accepted, %d submitters refused within %s; %s of %s used; /healthz: %s",
		size, len(accepted), len(refusals), time.Since(began).Round(time.Second), mib(dirBytes(dir)), size, health)
	for _, r := range refusals {
		t.Logf("refused: %s", r)
	}
	require.NotEmpty(t, refusals, "conductord took every job for 3 minutes on a %s disk", size)

	// Drain: a host with workers runs what was accepted.
	drainBegan := time.Now()
	c.workerd("drain", squares(2))
	wctx, wcancel := context.WithTimeout(context.Background(), drainFor)
	defer wcancel()
	var ended, wrong, notEnded atomic.Int64
	var firstBad atomic.Value
	jobs := make(chan int, len(accepted))
	for i := range accepted {
		jobs <- i
	}
	close(jobs)
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
	t.Logf("drain: %d of %d accepted jobs succeeded with their result in %s, %d ended otherwise, %d did not end within %s; first: %v; /healthz: %s",
		ended.Load(), len(accepted), time.Since(drainBegan).Round(time.Second), wrong.Load(), notEnded.Load(), drainFor, firstBad.Load(), healthz(c))

	// Afterwards: is a job taken again?
	actx, acancel := context.WithTimeout(context.Background(), time.Minute)
	defer acancel()
	j, err := cl.SubmitAndWait(actx, "squares", 7)
	after := "refused: " + fmt.Sprint(err)
	if err == nil {
		after = fmt.Sprintf("%s %s", j.Status, j.Result)
	}
	t.Logf("after the drain, a new job: %s", after)
	require.Zero(t, wrong.Load()+notEnded.Load(), "accepted jobs that did not succeed once the queue drained: %v", firstBad.Load())
	require.NoError(t, err, "no job is taken after the drain")
}

// drainFor bounds the drain: the accepted jobs take well under a minute
// to run on a healthy store.
const drainFor = 90 * time.Second

// healthz returns conductord's /healthz status code and body.
func healthz(c *cluster) string {
	resp, err := http.Get(c.url("/healthz"))
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 500))
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.Join(strings.Fields(string(b)), " "))
}

func mib(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }
