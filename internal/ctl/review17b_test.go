package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// jsonlFile writes n lines, the numbers 0 to n-1, to a file and returns
// its path.
func jsonlFile(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintln(&b, i)
	}
	path := filepath.Join(t.TempDir(), "jobs.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	return path
}

// TestReview17b_SubmitFileInterruptKeepsInFlightBatch: Ctrl-C while a
// chunk of submit -f is in flight. conductord may already have queued it;
// conductorctl used to cancel the request, lose its answer, and report
// that chunk as failed, so its batch id was never printed: the operator
// could not abort jobs that were queued. Now the chunk in flight gets its
// answer (its id printed), and nothing after it is sent.
func TestReview17b_SubmitFileInterruptKeepsInFlightBatch(t *testing.T) {
	t.Parallel()
	b := setupCluster(t)

	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	var mu sync.Mutex
	var queued []string // the batch ids conductord answered
	posts := 0
	h := b.c.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/v1/batches/") {
			h.ServeHTTP(w, r)
			return
		}
		// conductord queues the chunk; the interrupt comes before its
		// answer reaches conductorctl.
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var ans struct{ ID string }
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &ans), rec.Body.String())
		mu.Lock()
		queued = append(queued, ans.ID)
		posts++
		if posts == 2 {
			interrupt()
		}
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)

	var out, errOut bytes.Buffer
	err := Run(ctx, []string{"--server", srv.URL, "--token", "tok", "submit", "-f", jsonlFile(t, 5000), "--chunk", "1000", "squares"}, &out, &errOut)
	require.Error(t, err)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, queued, 2, "nothing sent after the interrupt")
	require.Equal(t, strings.Join(queued, "\n")+"\n", out.String(), "every batch conductord queued is printed, so that it can be aborted")
	require.ErrorContains(t, err, "interrupted")
	require.ErrorContains(t, err, "queued 2000 of 5000 jobs (every line of")
	require.ErrorContains(t, err, "before line 2001, in the batches printed)")
}
