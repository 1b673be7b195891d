package broker_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/conductor-run/conductor/pkg/broker"
)

// BenchmarkMaxRSS measures the peak memory of a worker that grows past
// max_rss (200 MB) by 10 MB every 10 ms (1 GB/s, the "grow" fake worker):
//
//   - cgroup: the pool has a cgroup, so max_rss is its worker's hard
//     limit; the peak is its memory cgroup's (memory.max_usage_in_bytes, or
//     memory.peak) when the OOM killer has ended it.
//   - process-groups: no cgroup, so max_rss is checked every second (as in
//     production) and recycles the worker; the peak is the worker's own
//     VmHWM, which it writes down at the SIGTERM of its recycle.
//
// It reports peak-MB, the highest of its b.N runs (run it with
// -benchtime 1x -count 5 for five figures), and the goal: the limit plus
// one check interval of growth.
func BenchmarkMaxRSS(b *testing.B) {
	const maxRSS = 200e6
	for _, contained := range []bool{true, false} {
		name := "cgroup"
		if !contained {
			name = "process-groups"
		}
		b.Run(name, func(b *testing.B) {
			if contained {
				if c, _ := broker.SetCgroups(broker.CgroupsAuto, nil); !c.Cgroups {
					b.Skipf("pools cannot be contained in cgroups here: %s", c.Detail)
				}
			}
			var peak int64
			for range b.N {
				p := growPastMaxRSS(b, contained, maxRSS)
				b.Logf("peak %d bytes, max_rss %d", p, int64(maxRSS))
				peak = max(peak, p)
			}
			b.ReportMetric(float64(peak)/1e6, "peak-MB")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// growPastMaxRSS runs a pool of one growing worker until max_rss ends the
// worker, and returns the worker's peak memory in bytes.
func growPastMaxRSS(b *testing.B, contained bool, maxRSS int64) int64 {
	b.Helper()
	peakFile := filepath.Join(b.TempDir(), "peak")
	events := make(chan broker.Event, 100)
	peaks := make(chan [2]int64, 10) // pid, memory peak
	cfg := broker.Config{
		Spec: broker.Spec{
			Name: "grow", Protocol: broker.ProtocolNone, MaxRSS: maxRSS,
			Cmd: []string{os.Args[0], "-test.run=^$"},
			Env: []string{envWorker + "=grow", "BROKER_TEST_PEAK_FILE=" + peakFile},
		},
		Logger:  slog.New(slog.DiscardHandler),
		OnEvent: func(e broker.Event) { events <- e },
	}
	broker.OnProcEnded(&cfg, func(pid int, peak int64) { peaks <- [2]int64{int64(pid), peak} })
	if !contained {
		broker.NoCgroups(&cfg)
	}
	pool, err := broker.NewPool(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := pool.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer pool.Kill()
	first := waitEvent(b, events, func(e broker.Event) bool { return e.Kind == broker.EventWorkerStart })
	exit := waitEvent(b, events, func(e broker.Event) bool { return e.Kind == broker.EventWorkerExit && e.PID == first.PID })
	for p := range peaks {
		if int(p[0]) == first.PID {
			if contained {
				if !exit.OOM {
					b.Fatalf("the worker was not OOM-killed: %s", exit.Exit)
				}
				return p[1]
			}
			break
		}
	}
	if exit.Reason != broker.ReasonRecycle {
		b.Fatalf("the worker was not recycled: %s, %s", exit.Reason, exit.Exit)
	}
	kb, err := os.ReadFile(peakFile)
	if err != nil {
		b.Fatalf("the worker wrote no peak: %v", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(kb)), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return n << 10
}

// waitEvent returns the first event of events that match takes, failing
// the benchmark after a minute.
func waitEvent(b *testing.B, events <-chan broker.Event, match func(broker.Event) bool) broker.Event {
	b.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case e := <-events:
			if match(e) {
				return e
			}
		case <-timeout:
			b.Fatal("no such event within a minute")
		}
	}
}
