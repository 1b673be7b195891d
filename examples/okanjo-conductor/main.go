// Command okanjo-conductor does in conductor what an okanjo-conductor
// program did: one program that generates a batch of jobs, holds lookups
// its workers read, answers their requests, gets their stats rolled up,
// and forks itself as the workers. It needs nothing else running.
//
// The job: convert 20 orders to euros with the exchange rates of a
// lookup; each worker counts what it converted, and tells the conductor
// side the total of each order (a request it answers).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/conductor-run/conductor/pkg/conductor"
	"github.com/conductor-run/conductor/pkg/worker"
)

// order is a job's payload.
type order struct {
	ID       int     `json:"id"`
	Amount   float64 `json:"amount"`
	Currency string  `json:"currency"`
}

// convert is the worker side (okanjo's processJob): it reads the rate from
// the lookup (answered in the worker after the first read of a currency),
// counts the order, and tells the conductor side its total in euros
// (okanjo's sendRequestToMaster).
func convert(ctx context.Context, job *worker.Job) (any, error) {
	var o order
	if err := job.Decode(&o); err != nil {
		return nil, worker.Permanent(err)
	}
	var rate float64
	if err := job.Lookup(ctx, "rates", o.Currency, &rate); err != nil {
		return nil, worker.Permanent(fmt.Errorf("order %d: no rate for %s: %w", o.ID, o.Currency, err))
	}
	eur := o.Amount * rate
	job.Count("orders", 1)
	if err := job.Request(ctx, "total", map[string]any{"order": o.ID, "eur": eur}, nil); err != nil {
		return nil, err
	}
	return eur, nil
}

func main() {
	if worker.IsWorker() {
		worker.Main(convert)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var (
		mu     sync.Mutex
		totals = map[int]float64{} // by order, as the workers told them
	)
	res, err := conductor.RunBatch(ctx, conductor.BatchConfig{
		Type:    "orders",
		Workers: 2,
		// okanjo's lookups, held by the conductor side.
		Lookups: map[string]map[string]any{"rates": {"eur": 1.0, "usd": 0.9, "gbp": 1.2}},
		// okanjo's onWorkerMessage: the workers' requests, by command.
		Handlers: map[string]conductor.RequestHandler{
			"total": func(_ context.Context, r *conductor.WorkerRequest) (any, error) {
				var t struct {
					Order int     `json:"order"`
					EUR   float64 `json:"eur"`
				}
				if err := json.Unmarshal(r.Data, &t); err != nil {
					return nil, &conductor.RequestError{Code: 400, Msg: err.Error()}
				}
				mu.Lock()
				totals[t.Order] = t.EUR
				mu.Unlock()
				return "noted", nil
			},
		},
		// okanjo's stats event: the workers' counters, rolled up (they
		// come with the workers' heartbeats, every second: a short batch
		// may end before a roll-up has seen them all).
		StatsInterval: 500 * time.Millisecond,
		OnStats: func(st *conductor.Stats) {
			if n := st.Agg.Diff["orders"]; n > 0 {
				fmt.Printf("stats: %v orders in the last %.1fs, %v in all\n", n, st.AvgTimeSpan, st.Agg.Last["orders"])
			}
		},
		Jobs: func(submit func(payload any) error) error {
			currencies := []string{"eur", "usd", "gbp"}
			for i := range 20 {
				if err := submit(order{ID: i, Amount: float64(10 * (i + 1)), Currency: currencies[i%3]}); err != nil {
					return err
				}
			}
			return nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "okanjo-conductor:", err)
		os.Exit(1)
	}
	mu.Lock()
	defer mu.Unlock()
	ids := make([]int, 0, len(totals))
	sum := 0.0
	for id, eur := range totals {
		ids = append(ids, id)
		sum += eur
	}
	sort.Ints(ids)
	fmt.Printf("%d orders converted, %d dead; the workers told %d totals, %.2f EUR in all\n", res.Succeeded, res.Dead, len(ids), sum)
}
