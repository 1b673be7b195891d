package conductor_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/pkg/client"
)

// TestRoles_HTTP: every route, called with no token and with each role's,
// is allowed or refused as docs/security.md's roles table says.
func TestRoles_HTTP(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)

	call := func(who, method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if who != "" {
			req.Header.Set("Authorization", "Bearer "+rc.tokens[who])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(data)
	}
	queue := func(typ string) string {
		code, body := call("root", "POST", "/v1/jobs/"+typ, "1")
		require.Equal(t, http.StatusAccepted, code, body)
		var j client.Job
		require.NoError(t, json.Unmarshal([]byte(body), &j))
		return j.ID
	}
	mine, other := queue("squares"), queue("other")
	code, body := call("root", "POST", "/v1/batches/other", "1\n2\n")
	require.Equal(t, http.StatusAccepted, code, body)
	var otherBatch client.Batch
	require.NoError(t, json.Unmarshal([]byte(body), &otherBatch))

	const (
		ok        = 0 // anything but 401 and 403
		forbidden = http.StatusForbidden
		noAuth    = http.StatusUnauthorized
		notFound  = http.StatusNotFound
	)
	type call_ struct{ method, path, body string }
	table := []struct {
		call_
		want map[string]int // by credential; "" is no token
	}{
		{call_{"POST", "/v1/jobs/squares", "2"}, map[string]int{"": noAuth, "web": ok, "ops": ok, "root": ok, "h1": forbidden}},
		{call_{"POST", "/v1/jobs/other", "2"}, map[string]int{"web": forbidden, "ops": ok}},
		{call_{"GET", "/v1/jobs/" + mine, ""}, map[string]int{"": noAuth, "web": ok, "ops": ok, "h1": forbidden}},
		{call_{"GET", "/v1/jobs/" + other, ""}, map[string]int{"web": notFound, "ops": ok}},
		{call_{"GET", "/v1/jobs?type=squares", ""}, map[string]int{"web": ok, "ops": ok, "h1": forbidden}},
		{call_{"GET", "/v1/jobs", ""}, map[string]int{"web": forbidden, "ops": ok}},
		{call_{"GET", "/v1/jobs?type=other", ""}, map[string]int{"web": forbidden, "ops": ok}},
		{call_{"POST", "/v1/jobs/" + other + "/cancel", ""}, map[string]int{"web": notFound, "h1": forbidden}},
		{call_{"POST", "/v1/jobs/" + mine + "/cancel", ""}, map[string]int{"web": ok}},
		{call_{"POST", "/v1/jobs/" + mine + "/retry", ""}, map[string]int{"web": forbidden, "h1": forbidden, "ops": ok}},
		{call_{"POST", "/v1/batches/squares", "1\n2\n"}, map[string]int{"web": ok, "h1": forbidden}},
		{call_{"POST", "/v1/batches/other", "1\n2\n"}, map[string]int{"web": forbidden, "ops": ok}},
		{call_{"GET", "/v1/batches/" + otherBatch.ID, ""}, map[string]int{"web": notFound, "ops": ok}},
		{call_{"POST", "/v1/batches/" + otherBatch.ID + "/abort", ""}, map[string]int{"web": forbidden, "h1": forbidden, "ops": ok}},
		{call_{"POST", "/v1/workers/h1/squares/0/message", "1"}, map[string]int{"web": forbidden, "h1": forbidden}},
		{call_{"POST", "/v1/pools/squares/broadcast", "1"}, map[string]int{"web": forbidden, "h1": forbidden}},
		{call_{"GET", "/v1/pools", ""}, map[string]int{"": noAuth, "web": forbidden, "h1": forbidden, "ops": ok, "root": ok}},
		{call_{"GET", "/v1/workers", ""}, map[string]int{"web": forbidden, "ops": ok}},
		{call_{"GET", "/v1/hosts", ""}, map[string]int{"": noAuth, "web": forbidden, "h1": forbidden, "ops": ok}},
		{call_{"GET", "/v1/version", ""}, map[string]int{"": noAuth, "web": ok, "h1": forbidden, "ops": ok}},
		{call_{"GET", "/v1/events?max=0", ""}, map[string]int{"web": forbidden, "h1": forbidden}},
		{call_{"GET", "/v1/console/stream", ""}, map[string]int{"": noAuth, "web": forbidden, "h1": forbidden}},
		{call_{"GET", "/v1/pools/squares/logs?tail=1", ""}, map[string]int{"": noAuth, "web": forbidden, "h1": forbidden, "ops": ok, "root": ok}},
		{call_{"POST", "/v1/pools/squares/recycle", ""}, map[string]int{"web": forbidden, "h1": forbidden, "ops": ok}},
		{call_{"POST", "/v1/pools/squares/upgrade", `{"cmd":["/bin/sh","-c","id"]}`}, map[string]int{"web": forbidden, "h1": forbidden}},
		{call_{"GET", "/healthz", ""}, map[string]int{"": ok}},
	}
	for _, tc := range table {
		for who, want := range tc.want {
			code, body := call(who, tc.method, tc.path, tc.body)
			if want == ok {
				require.NotContains(t, []int{noAuth, forbidden}, code, "%s %s as %q: %s", tc.method, tc.path, who, body)
				continue
			}
			require.Equal(t, want, code, "%s %s as %q: %s", tc.method, tc.path, who, body)
		}
	}
	code, body = call("h1", "GET", "/v1/pools", "")
	require.Equal(t, forbidden, code)
	require.Contains(t, body, "credential h1 (host) may not do this: it needs the operator role")
}

// TestRoles_RevokeEndsEventStreams: an event or log stream opened with a
// credential ends when the credential is revoked, as its NATS connections
// do; a new call with it is refused.
func TestRoles_RevokeEndsEventStreams(t *testing.T) {
	t.Parallel()
	rc := startRoleCluster(t)
	startHost(t, rc, "h1", "squares")
	srv := httptest.NewServer(rc.c.Handler())
	t.Cleanup(srv.Close)
	open := func(path string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+rc.tokens["ops"])
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			t.Cleanup(func() { resp.Body.Close() })
		}
		return resp, err
	}
	events, err := open("/v1/events")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, events.StatusCode)
	var logs *http.Response
	require.Eventually(t, func() bool { // once h1 is heard
		var err error
		logs, err = open("/v1/pools/squares/logs?follow=true")
		return err == nil && logs.StatusCode == http.StatusOK
	}, 20*time.Second, 20*time.Millisecond)
	ended := make(chan error, 2)
	for _, resp := range []*http.Response{events, logs} {
		go func() {
			_, err := io.Copy(io.Discard, resp.Body)
			ended <- err
		}()
	}

	require.NoError(t, auth.Revoke(rc.creds, "ops"))
	for range 2 {
		select {
		case err := <-ended:
			require.NoError(t, err, "the stream ends cleanly")
		case <-time.After(10 * time.Second):
			t.Fatal("a revoked operator's stream goes on")
		}
	}
	req2, _ := http.NewRequest("GET", srv.URL+"/v1/pools", nil)
	req2.Header.Set("Authorization", "Bearer "+rc.tokens["ops"])
	resp2, err := http.DefaultClient.Do(req2)
	require.NoError(t, err)
	resp2.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp2.StatusCode)
}
