package integration

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// BenchmarkLargePayloads measures no-op jobs whose payloads are over the
// inline limit (1 MiB), passed by reference through the payload bucket,
// against the JetStream object store moving the same objects, in the same
// run on the same conductord. For each size (BENCH_LARGE_SIZES, default
// 4 MiB and 16 MiB), BENCH_PAIRS pairs (default 5) of:
//   - raw: n objects of the size put into a file-backed object store on
//     conductord's embedded server by 2 writers, each read whole by one of
//     2 readers as soon as it is stored, then deleted: what any
//     by-reference path must do at the least;
//   - e2e: n jobs of the size submitted by 2 goroutines of a Go client
//     (which stores each payload, then queues its job), run by 2
//     noop-worker processes under one workerd, counted by their succeeded
//     events; conductord removes each object once its job has succeeded.
//
// Reported per size: raw objects/s and MB/s, e2e jobs/s and MB/s, the
// ratio e2e/raw of each pair (median, min, max), the CPU per job of
// conductord, workerd and one worker during the e2e phases, and the peak
// resident memory of each over the whole run. BENCH_LARGE_JOBS sets the
// jobs per phase (default 64 for 4 MiB, 16 for 16 MiB).
//
//	go test -run '^$' -bench BenchmarkLargePayloads -benchtime 1x ./integration/
func BenchmarkLargePayloads(b *testing.B) {
	sizes := largeSizes(b)
	for range b.N {
		c, nc, js := benchCluster(b)
		ctx := context.Background()
		obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "bench-objects", Storage: jetstream.FileStorage})
		require.NoError(b, err)
		cl, err := client.Connect(c.natsURL(), client.Config{})
		require.NoError(b, err)
		b.Cleanup(cl.Close)

		pids := noopPool(c)

		logMachine(b)
		var summary []string
		for _, size := range sizes {
			n := largeJobs(b, size)
			payload := jsonPayload(size)
			mb := float64(size) / 1e6
			var raws, e2es, ratios []float64
			cpu := map[string][]float64{}
			for i := range benchPairs(b) {
				raw := objectsRoundTrip(b, obs, n, payload)
				before := usages(pids)
				e2e := runLarge(b, nc, cl, n, payload)
				after := usages(pids)
				for name := range pids {
					cpu[name] = append(cpu[name], cpuPerJob(before[name], after[name], n))
				}
				b.Logf("%s pair %d: raw %.1f objects/s (%.1f MB/s), e2e %.1f jobs/s (%.1f MB/s), ratio %.3f; cpu per job ms: conductord %.1f, workerd %.1f, worker %.1f",
					sizeName(size), i+1, raw, raw*mb, e2e, e2e*mb, e2e/raw, cpu["conductord"][i]/1000, cpu["workerd"][i]/1000, cpu["worker"][i]/1000)
				raws, e2es, ratios = append(raws, raw), append(e2es, e2e), append(ratios, e2e/raw)
			}
			p := sizeName(size)
			reportMMM(b, "raw_"+p+"_MB/s", raws, mb)
			reportMMM(b, "e2e_"+p+"_MB/s", e2es, mb)
			reportMMM(b, "ratio_"+p, ratios, 1)
			_, rawMed, _ := spread(raws)
			_, e2eMed, _ := spread(e2es)
			lo, med, hi := spread(ratios)
			summary = append(summary, fmt.Sprintf("%-7s %5d %9.1f %9.1f %6.3f %6.3f %6.3f %8.1f %8.1f %8.1f",
				p, n, rawMed*mb, e2eMed*mb, med, lo, hi,
				median(cpu["conductord"])/1000, median(cpu["workerd"])/1000, median(cpu["worker"])/1000))
		}
		peaks := map[string]float64{}
		for name, pid := range pids {
			peaks[name] = peakRSS(pid)
			b.ReportMetric(peaks[name], name+"_peak_MB")
		}
		b.Logf("large payloads by reference, %d pairs (medians; ratio median, min, max; CPU ms per job during e2e):\n%-7s %5s %9s %9s %6s %6s %6s %8s %8s %8s\n%s\npeak RSS MB: conductord %.0f, workerd %.0f, worker %.0f",
			benchPairs(b), "size", "n", "raw MB/s", "e2e MB/s", "ratio", "min", "max", "cond", "workerd", "worker",
			strings.Join(summary, "\n"), peaks["conductord"], peaks["workerd"], peaks["worker"])
	}
}

// largeSizes reads BENCH_LARGE_SIZES, by default 4 MiB and 16 MiB.
func largeSizes(b *testing.B) []int {
	v := cmp.Or(os.Getenv("BENCH_LARGE_SIZES"), strconv.Itoa(4<<20)+","+strconv.Itoa(16<<20))
	var sizes []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 1<<20 || n > 64<<20 {
			b.Fatalf("BENCH_LARGE_SIZES=%q: want sizes over 1 MiB, up to 64 MiB", v)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// largeJobs is the jobs per phase of size: BENCH_LARGE_JOBS, or 256 MiB
// in all, at least 8.
func largeJobs(b *testing.B, size int) int {
	return envInt(b, "BENCH_LARGE_JOBS", max(8, (256<<20)/size))
}

// objectsRoundTrip puts n objects of payload into obs with 2 writers,
// has 2 readers read each whole as soon as it is stored and delete it,
// and returns the objects a second from the first put to the last read.
func objectsRoundTrip(b *testing.B, obs jetstream.ObjectStore, n int, payload []byte) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	names := make(chan string, n)
	var next atomic.Int64
	var failed atomic.Value
	fail := func(err error) {
		failed.CompareAndSwap(nil, err)
		cancel()
	}
	var writers, readers sync.WaitGroup
	start := time.Now()
	for range 2 {
		writers.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				name := "obj-" + strconv.FormatInt(i, 10)
				if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(payload)); err != nil {
					fail(err)
					return
				}
				names <- name
			}
		})
		readers.Go(func() {
			for name := range names {
				got, err := obs.GetBytes(ctx, name)
				if err == nil && len(got) != len(payload) {
					err = fmt.Errorf("object %s read %d bytes of %d", name, len(got), len(payload))
				}
				if err == nil {
					err = obs.Delete(ctx, name)
				}
				if err != nil {
					fail(err)
					return
				}
			}
		})
	}
	writers.Wait()
	close(names)
	readers.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("raw objects: %v", err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// runLarge submits n jobs of payload to pool noop with 2 goroutines of
// cl, and returns the jobs a second from the first submission until the
// succeeded events of all n have come.
func runLarge(b *testing.B, nc *nats.Conn, cl *client.Client, n int, payload []byte) float64 {
	b.Helper()
	space, _ := subject.New("default")
	var ok atomic.Int64
	done := make(chan struct{})
	sub, err := nc.Subscribe(space.JobEvent("noop", "succeeded"), func(*nats.Msg) {
		if ok.Add(1) == int64(n) {
			close(done)
		}
	})
	require.NoError(b, err)
	defer sub.Unsubscribe()
	require.NoError(b, nc.Flush())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var next atomic.Int64
	errs := make(chan error, 2)
	start := time.Now()
	var submitters sync.WaitGroup
	for range 2 {
		submitters.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, err := cl.Submit(ctx, "noop", json.RawMessage(payload)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	submitters.Wait()
	close(errs)
	for err := range errs {
		b.Fatalf("e2e: submit: %v", err)
	}
	select {
	case <-done:
	case <-ctx.Done():
		b.Fatalf("e2e: only %d of %d succeeded", ok.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// peakRSS is the peak resident memory of process pid so far, in MB
// (VmHWM), 0 if it cannot be read.
func peakRSS(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1000
		}
	}
	return 0
}
