package lookup

import (
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/natstest"
)

// BenchmarkGet: a lookup's uncached round trip through the service (a
// client on its own connection, the service on the server's side, the
// store a key-value get), against a raw NATS request/reply on the same
// server, a responder answering at once, measured in the same run; each
// reports its p50 and p99. The requester shares this process with the
// server here: the figures of docs/benchmarks.md for a worker process
// come with the channel's lookups.
func BenchmarkGet(b *testing.B) {
	ns := natstest.Server(b)
	srvConn := natstest.Conn(b, ns)
	js, err := jetstream.New(srvConn)
	if err != nil {
		b.Fatal(err)
	}
	store, err := Open(b.Context(), js, Config{Bucket: "conductor-default-lookups"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := store.Set(b.Context(), "prices", "sku-42", json.RawMessage(`{"eur":12.5}`)); err != nil {
		b.Fatal(err)
	}
	svc, err := Serve(srvConn, store, prefix)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = svc.Stop() })
	raw, err := srvConn.Subscribe("bench.raw", func(m *nats.Msg) { _ = m.Respond([]byte(`{"value":{"eur":12.5},"rev":1}`)) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = raw.Unsubscribe() })
	caller := natstest.Conn(b, ns)
	client := NewClient(caller, prefix)

	run := func(b *testing.B, call func() error) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			if err := call(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_us")
	}
	b.Run("raw-request-reply", func(b *testing.B) {
		run(b, func() error {
			_, err := caller.Request("bench.raw", []byte(`{"name":"prices","key":"sku-42"}`), 5*time.Second)
			return err
		})
	})
	b.Run("service-get", func(b *testing.B) {
		run(b, func() error { _, _, err := client.Get(b.Context(), "prices", "sku-42"); return err })
	})
}
