package ctl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeAPI answers like conductord: job 7 succeeds, anything else dies.
func fakeAPI(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/jobs/{type}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"missing or wrong token"}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		status := "dead"
		if string(body) == "7" {
			status = "succeeded"
		}
		if r.URL.Query().Get("wait") == "" {
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"id":"j1"}`)
			return
		}
		_, _ = io.WriteString(w, `{"id":"j1","status":"`+status+`"}`)
	})
	mux.HandleFunc("GET /v1/pools", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `[{"type":"squares","queued":3,"held":5,"running":1,"succeeded":10,"failed":0,"dead":0,"workers":2},
			{"type":"broken","queued":0,"held":0,"running":0,"succeeded":0,"failed":0,"dead":0,"workers":0,"state":"failed",
			 "reason":"h1: crash loop: 5 failed starts within 10s; last exit 127 \"no such file\"; retry at 2026-11-23T10:00:10.000Z"}]`)
	})
	mux.HandleFunc("GET /v1/workers", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, `[{"host":"h1","pool":"broken","index":0,"pid":0,"state":"backoff","rss":0,"jobs_done":0,"restarts":5,
			"reason":"restarts paused (crash loop); exit 127 \"no such file\" x3 in a row; retry at 2026-11-23T10:00:10.000Z"}]`)
	})
	mux.HandleFunc("GET /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("status") != "dead" || r.URL.Query().Get("type") != "squares" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, `[{"id":"j9","type":"squares","attempts":3,"updated_at":"2026-11-23T10:00:00Z","error":"boom"}]`)
	})
	mux.HandleFunc("POST /v1/jobs/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"id":"`+r.PathValue("id")+`","status":"queued"}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func run(t *testing.T, srv *httptest.Server, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), append([]string{"--server", srv.URL, "--token", "tok"}, args...), &out, &errOut)
	return out.String(), err
}

func TestRun_Submit(t *testing.T) {
	t.Parallel()
	srv := fakeAPI(t)

	out, err := run(t, srv, "submit", "squares", "7")
	require.NoError(t, err)
	require.JSONEq(t, `{"id":"j1"}`, out)

	out, err = run(t, srv, "submit", "--wait", "squares", "7")
	require.NoError(t, err)
	require.Contains(t, out, `"succeeded"`)

	_, err = run(t, srv, "submit", "--wait=5s", "squares", "8")
	var exit *ExitError
	require.True(t, errors.As(err, &exit))
	require.Equal(t, 3, exit.Code)
	require.Equal(t, "job j1 is dead", exit.Msg)

	_, err = run(t, srv, "submit", "squares", "nope")
	require.ErrorContains(t, err, "not valid JSON")
	_, err = run(t, srv, "submit", "--wait=soon", "squares", "7")
	require.Error(t, err)
	_, err = run(t, srv, "submit", "squares")
	require.ErrorContains(t, err, "usage")
}

func TestRun_ErrorsAndTables(t *testing.T) {
	t.Parallel()
	srv := fakeAPI(t)

	var out, errOut bytes.Buffer
	err := Run(context.Background(), []string{"--server", srv.URL, "submit", "squares", "7"}, &out, &errOut)
	require.ErrorContains(t, err, "missing or wrong token (401 Unauthorized)")

	// The token from a file, kept out of the process list.
	tokFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokFile, []byte("tok\n"), 0o600))
	out.Reset()
	require.NoError(t, Run(context.Background(), []string{"--server", srv.URL, "--token-file", tokFile, "pools"}, &out, &errOut))
	require.Contains(t, out.String(), "squares")

	out2, err := run(t, srv, "pools")
	require.NoError(t, err)
	require.Contains(t, out2, "TYPE     QUEUED  HELD  RUNNING")
	require.Contains(t, out2, "squares  3       5     1")
	require.Contains(t, out2, "REASON")
	require.Contains(t, out2, `failed  h1: crash loop: 5 failed starts within 10s; last exit 127 "no such file"; retry at 2026-11-23T10:00:10.000Z`)

	out2, err = run(t, srv, "workers")
	require.NoError(t, err)
	require.Contains(t, out2, "STATE    RSS")
	require.Contains(t, out2, `backoff  0    0          5         -    restarts paused (crash loop); exit 127 "no such file" x3 in a row; retry at`)

	out2, err = run(t, srv, "dead", "squares")
	require.NoError(t, err)
	require.Contains(t, out2, "ID  TYPE     ATTEMPTS  UPDATED_AT            ERROR")
	require.Contains(t, out2, "j9  squares  3         2026-11-23T10:00:00Z  boom")
	out2, err = run(t, srv, "retry", "j9")
	require.NoError(t, err)
	require.Contains(t, out2, `"status": "queued"`)

	_, err = run(t, srv, "frobnicate")
	require.ErrorContains(t, err, `unknown command "frobnicate"`)
}
