package main

import (
	"flag"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("url", "nats://127.0.0.1:4222", "")
	size := flag.Int("size", 1000000, "")
	n := flag.Int("n", 300, "")
	typ := flag.String("type", "noop", "")
	types := flag.Int("types", 0, "spread over noop0..noopK-1")
	flag.Parse()
	nc, err := nats.Connect(*url)
	if err != nil {
		panic(err)
	}
	js, _ := jetstream.New(nc)
	payload := []byte(`{"blob":"` + strings.Repeat("z", *size-12) + `"}`)
	var ok atomic.Int64
	done := make(chan struct{})
	evs := "conductor.default.events.job." + *typ + ".succeeded"
	if *types > 0 {
		evs = "conductor.default.events.job.*.succeeded"
	}
	sub, _ := nc.Subscribe(evs, func(*nats.Msg) {
		if ok.Add(1) == int64(*n) {
			close(done)
		}
	})
	sub.SetPendingLimits(-1, -1)
	nc.Flush()
	start := time.Now()
	for i := 0; i < *n; i++ {
		subj := "conductor.default.jobs." + *typ
		if *types > 0 {
			subj = fmt.Sprintf("conductor.default.jobs.noop%d", i%*types)
		}
		if _, err := js.PublishAsync(subj, payload); err != nil {
			<-js.PublishAsyncComplete()
			i--
		}
	}
	<-js.PublishAsyncComplete()
	fmt.Printf("published at %v: %d ok\n", time.Since(start).Round(time.Millisecond), ok.Load())
	tick := time.NewTicker(500 * time.Millisecond)
	last := ok.Load()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-tick.C:
			n := ok.Load()
			fmt.Printf("%d ", n-last)
			last = n
		}
	}
	fmt.Println()
	el := time.Since(start)
	fmt.Printf("%d jobs of %d B in %v: %.0f jobs/s, %.1f MB/s\n", *n, *size, el, float64(*n)/el.Seconds(), float64(*n)*float64(*size)/el.Seconds()/1e6)
}
