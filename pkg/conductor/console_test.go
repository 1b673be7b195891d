package conductor_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/conductor"
)

// setupConsole starts a conductor serving its HTTP API and returns the
// API's URL.
func setupConsole(t *testing.T, cfg conductor.Config) string {
	t.Helper()
	cfg.DataDir = t.TempDir()
	cfg.NATSListen = "127.0.0.1:0"
	cfg.HTTPListen = "127.0.0.1:0"
	c, err := conductor.New(cfg)
	require.NoError(t, err)
	require.NoError(t, c.Start(t.Context()))
	t.Cleanup(c.Stop)
	return "http://" + c.HTTPAddr()
}

// readSSE reads one Server-Sent Event from r: its name and data.
func readSSE(t *testing.T, r *bufio.Reader) (name, data string) {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" && data != "":
			return name, data
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data += strings.TrimPrefix(line, "data: ")
		}
	}
}

// openConsole opens GET /v1/console/stream with token (none if empty).
func openConsole(t *testing.T, url, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url+"/v1/console/stream", nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestConsole_Stream: the stream starts with the history, then snapshots
// come, with the pools (a type with a job queued and no worker) and a
// point per type; it needs the token.
func TestConsole_Stream(t *testing.T) {
	t.Parallel()
	url := setupConsole(t, conductor.Config{Token: "s3cret"})
	require.Equal(t, http.StatusUnauthorized, openConsole(t, url, "").StatusCode)

	req, _ := http.NewRequest("POST", url+"/v1/jobs/console_sq", strings.NewReader("7"))
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	resp = openConsole(t, url, "s3cret")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	r := bufio.NewReader(resp.Body)
	name, data := readSSE(t, r)
	require.Equal(t, "history", name)
	require.Contains(t, data, `"interval":"1s"`)
	for {
		name, data = readSSE(t, r)
		require.Equal(t, "snapshot", name)
		var snap struct {
			Pools []struct {
				Type   string `json:"type"`
				Queued int64  `json:"queued"`
			} `json:"pools"`
			Hosts  []any `json:"hosts"`
			Points map[string]struct {
				T      int64 `json:"t"`
				Queued int64 `json:"queued"`
			} `json:"points"`
		}
		require.NoError(t, json.Unmarshal([]byte(data), &snap))
		require.NotNil(t, snap.Hosts)
		if p, ok := snap.Points["console_sq"]; ok && p.Queued == 1 {
			require.NotZero(t, p.T)
			require.Equal(t, "console_sq", snap.Pools[0].Type)
			return
		}
	}
}

// TestConsole_StreamsBounded: past Config.MaxConsoleStreams, a stream is
// refused at once with 503 and Retry-After; the ones open go on.
func TestConsole_StreamsBounded(t *testing.T) {
	t.Parallel()
	url := setupConsole(t, conductor.Config{MaxConsoleStreams: 1})
	first := openConsole(t, url, "")
	require.Equal(t, http.StatusOK, first.StatusCode)
	second := openConsole(t, url, "")
	require.Equal(t, http.StatusServiceUnavailable, second.StatusCode)
	require.Equal(t, "1", second.Header.Get("Retry-After"))
	name, _ := readSSE(t, bufio.NewReader(first.Body))
	require.Equal(t, "history", name)
}

// TestConsole_Page: GET / is the console's page, open, with its policy;
// its modules are served as JavaScript.
func TestConsole_Page(t *testing.T) {
	t.Parallel()
	url := setupConsole(t, conductor.Config{Token: "s3cret"})
	resp, err := http.Get(url + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	resp, err = http.Get(url + "/console/app.js")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Type"), "javascript")
}
