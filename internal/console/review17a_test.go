package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/console"
	"github.com/conductor-run/conductor/internal/console/consoletest"
)

// page starts a headless Chromium on the console's page served with
// feed as its GET /v1/console/stream, and returns the tab. Without a
// Chromium the test is skipped, saying why, unless CI is set.
func page(t *testing.T, feed http.HandlerFunc, hash string) context.Context {
	t.Helper()
	path := consoletest.Chromium(t)
	mux := http.NewServeMux()
	mux.Handle("/", console.Handler())
	mux.HandleFunc("GET /v1/console/stream", feed)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"status":"ok"}`) })
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `[]`) })
	srv := httptest.NewServer(mux)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	tab, cancelTab := chromedp.NewContext(alloc)
	var mu sync.Mutex
	var thrown []string
	require.NoError(t, chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			thrown = append(thrown, e.ExceptionDetails.Text)
			mu.Unlock()
		}
	}))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancel()
		srv.CloseClientConnections()
		srv.Close()
		mu.Lock()
		defer mu.Unlock()
		require.Empty(t, thrown, "exceptions the page did not catch")
	})
	require.NoError(t, chromedp.Do(tab, chromedp.Navigate(srv.URL+"/"+hash)))
	return tab
}

// event writes one Server-Sent Event and flushes it.
func event(w http.ResponseWriter, name, data string) {
	fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
	w.(http.Flusher).Flush()
}

// point is a point of the feed at second i.
func point(i int) string {
	return fmt.Sprintf(`{"t":%d,"succeeded":%d,"failed":0,"dead":0,"queued":0,"running":0,"ran":0}`, 1_700_000_000_000+i*1000, 10*i)
}

// TestReview17a_ChartsKeepHistoryOverAFailedRead: a snapshot whose pools
// could not be read (error set, no points) keeps the charts' points, as
// conductord keeps its history; the page dropped every type's points and
// drew its charts again from one point.
func TestReview17a_ChartsKeepHistoryOverAFailedRead(t *testing.T) {
	t.Parallel()
	snapshot := func(points string, err string) string {
		return fmt.Sprintf(`{"time":"2026-12-05T00:00:00Z","hosts":[],"pools":[],"workers":[],"workers_total":0,"points":{%s},"error":%q}`, points, err)
	}
	tab := page(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		var hist []string
		for i := range 5 {
			hist = append(hist, point(i))
		}
		event(w, "history", `{"interval":"1s","points":{"t1":[`+strings.Join(hist, ",")+`]}}`)
		event(w, "snapshot", snapshot(`"t1":`+point(5), ""))
		event(w, "snapshot", snapshot("", "read the pools: context deadline exceeded"))
		event(w, "snapshot", snapshot(`"t1":`+point(6), ""))
		<-r.Context().Done()
	}, "#/charts")
	require.NoError(t, chromedp.Do(tab,
		chromedp.Poll[chromedp.Void](`document.querySelector('#charts .chart-row[data-type="t1"]')?.dataset.points === '7'`,
			chromedp.WithPollingTimeout(10*time.Second))),
		"the seven points, the failed read's snapshot between them")
}

// TestReview17a_StaleFeedOpenedAgain: a feed that stays open and sends
// nothing (conductord stopped without closing it, a proxy or a network
// that lost it) is opened again: the page said "stale" and waited for
// the connection to break, which may be never.
func TestReview17a_StaleFeedOpenedAgain(t *testing.T) {
	t.Parallel()
	var opened atomic.Int32
	tab := page(t, func(w http.ResponseWriter, r *http.Request) {
		n := opened.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		event(w, "history", `{"interval":"1s","points":{}}`)
		event(w, "snapshot", fmt.Sprintf(`{"time":"2026-12-05T00:00:00Z","hosts":[],"pools":[],"workers":[],"workers_total":%d,"points":{}}`, n))
		<-r.Context().Done() // silent, open
	}, "")
	require.NoError(t, chromedp.Do(tab,
		chromedp.Poll[chromedp.Void](`document.querySelector('#live').textContent === 'stale'`, chromedp.WithPollingTimeout(10*time.Second))))
	require.NoError(t, chromedp.Do(tab,
		chromedp.Poll[chromedp.Void](`document.querySelector('#live').textContent === 'live'`, chromedp.WithPollingTimeout(20*time.Second))),
		"the feed opened again and live")
	require.GreaterOrEqual(t, opened.Load(), int32(2))
}

// TestReview17a_WorkerCPUUnderATick: a worker that has used less than a
// clock tick (10ms) of CPU has no cpu in its record (zero is left out),
// and its CPU cell was empty, as if unknown (docs/console/overview.png);
// one whose RSS was read says under a tick.
func TestReview17a_WorkerCPUUnderATick(t *testing.T) {
	t.Parallel()
	tab := page(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		event(w, "history", `{"interval":"1s","points":{}}`)
		event(w, "snapshot", `{"time":"2026-12-05T00:00:00Z","hosts":[],"pools":[],"workers_total":3,"points":{},"workers":[`+
			`{"host":"h1","pool":"p","index":0,"pid":10,"state":"ready","rss":3000000,"jobs_done":0,"restarts":0},`+
			`{"host":"h1","pool":"p","index":1,"pid":11,"state":"busy","rss":3000000,"jobs_done":0,"restarts":0,"cpu":"1.5s"},`+
			`{"host":"h1","pool":"p","index":2,"pid":0,"state":"backoff","rss":0,"jobs_done":0,"restarts":1}]}`)
		<-r.Context().Done()
	}, "")
	cells := `[...document.querySelectorAll('#workers tbody tr')].map(r => r.cells[7].textContent).join('|')`
	require.NoError(t, chromedp.Do(tab,
		chromedp.Poll[chromedp.Void](`document.querySelectorAll('#workers tbody tr').length === 3`, chromedp.WithPollingTimeout(10*time.Second))))
	got, err := chromedp.Run(tab, chromedp.Evaluate[string](cells))
	require.NoError(t, err)
	require.Equal(t, "<10ms|1.50s|", got)
}

// TestReview17a_LatencyOnlyWhereAttemptsRan: the latency chart draws the
// points at which attempts ran; a second in which none ran has no run
// time (conductord leaves p50 and p95 out), and was drawn as 0, a dip to
// nothing in the chart each quiet second.
func TestReview17a_LatencyOnlyWhereAttemptsRan(t *testing.T) {
	t.Parallel()
	tab := page(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, "")
	got, err := chromedp.Run(tab, chromedp.Evaluate[string](`import("/console/charts.js").then((m) => JSON.stringify(m.latency([
		{t: 1, ran: 3, p50: 0.002, p95: 0.004}, {t: 2, ran: 0}, {t: 3, ran: 1, p50: 0.003, p95: 0.003}])))`,
		chromedp.EvalAwaitPromise))
	require.NoError(t, err)
	require.JSONEq(t, `[["p50",[{"t":1,"v":0.002},{"t":3,"v":0.003}]],["p95",[{"t":1,"v":0.004},{"t":3,"v":0.003}]]]`, got)
}
