// Command lookupbench times lookups for the integration benchmarks
// (BenchmarkLookups). Run by workerd, it is a worker whose jobs time a
// handler's lookups:
//
//	{"do":"cached","n":N}                 N gets of one key: all but the first from workerd's cache
//	{"do":"cached","n":N}            N gets of one key (k): all but the first from workerd's cache
//	{"do":"uncached","n":N,"from":F,"prefix":"k"} N gets, each of a key the host never read: kF, kF+1, …
//
// (200 more before, untimed, to warm up)
//
// and answer {"n":…,"p50_ns":…,"p99_ns":…,"ns":…} (ns: the whole run).
// Run as `lookupbench raw URL N`, it is the baseline: N NATS requests to
// bench.echo on URL, one at a time, timed the same way, printed as the
// same JSON.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/pkg/worker"
)

type timing struct {
	N     int   `json:"n"`
	P50NS int64 `json:"p50_ns"`
	P99NS int64 `json:"p99_ns"`
	NS    int64 `json:"ns"`
}

func main() {
	if len(os.Args) == 4 && os.Args[1] == "raw" {
		n, err := strconv.Atoi(os.Args[3])
		if err == nil {
			err = raw(os.Args[2], n)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lookupbench:", err)
			os.Exit(1)
		}
		return
	}
	worker.Main(handle)
}

// warm is how many calls each run makes before it times any.
const warm = 200

func raw(url string, n int) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	t, err := timeCalls(n, func(int) error {
		_, err := nc.Request("bench.echo", []byte(`{"name":"bench","key":"k"}`), 5*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(t)
}

func timeCalls(n int, call func(i int) error) (timing, error) {
	for i := range warm {
		if err := call(-1 - i); err != nil {
			return timing{}, err
		}
	}
	ds := make([]time.Duration, n)
	start := time.Now()
	for i := range n {
		t := time.Now()
		if err := call(i); err != nil {
			return timing{}, err
		}
		ds[i] = time.Since(t)
	}
	total := time.Since(start)
	slices.Sort(ds)
	return timing{N: n, P50NS: int64(ds[n/2]), P99NS: int64(ds[n*99/100]), NS: int64(total)}, nil
}

func handle(ctx context.Context, job *worker.Job) (any, error) {
	var p struct {
		Do     string `json:"do"`
		N      int    `json:"n"`
		From   int    `json:"from"`
		Prefix string `json:"prefix"`
	}
	if err := job.Decode(&p); err != nil || p.N <= 0 {
		return nil, worker.Permanent(fmt.Errorf("lookupbench: bad payload: %v", err))
	}
	var v json.RawMessage
	get := func(key string) error { return job.Lookup(ctx, "bench", key, &v) }
	switch p.Do {
	case "cached":
		return timeCalls(p.N, func(int) error { return get("k") })
	case "uncached":
		next := p.From
		return timeCalls(p.N, func(int) error {
			next++
			return get(cmp.Or(p.Prefix, "k") + strconv.Itoa(next-1))
		})
	}
	return nil, worker.Permanent(fmt.Errorf("lookupbench: unknown do %q", p.Do))
}
