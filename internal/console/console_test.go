package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/conductor-run/conductor/internal/console"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConsole_Handler: the page at "/", its assets under Prefix with their
// types, the policy on every answer, and 404 for anything else.
func TestConsole_Handler(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(console.Handler())
	t.Cleanup(srv.Close)
	tests := []struct {
		path, wantType string
		wantCode       int
		wantBody       string
	}{
		{"/", "text/html; charset=utf-8", http.StatusOK, `<script type="module" src="/console/app.js">`},
		{"/console/app.js", "text/javascript; charset=utf-8", http.StatusOK, "runFeed"},
		{"/console/api.js", "text/javascript; charset=utf-8", http.StatusOK, "Authorization"},
		{"/console/style.css", "text/css; charset=utf-8", http.StatusOK, ":root"},
		{"/console/", "", http.StatusNotFound, ""},
		{"/console/nope.js", "", http.StatusNotFound, ""},
		{"/elsewhere", "", http.StatusNotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			resp, err := http.Get(srv.URL + tc.path)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, tc.wantCode, resp.StatusCode)
			require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
			require.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
			if tc.wantCode == http.StatusOK {
				require.Equal(t, tc.wantType, resp.Header.Get("Content-Type"))
				require.Contains(t, string(body), tc.wantBody)
			}
		})
	}
}

// TestConsole_NoOutsideReferences: the page loads nothing from elsewhere
// (no CDN, no external font) and never puts the token in a URL.
func TestConsole_NoOutsideReferences(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(console.Handler())
	t.Cleanup(srv.Close)
	for _, name := range []string{"/", "/console/app.js", "/console/api.js", "/console/style.css", "/console/overview.js",
		"/console/charts.js", "/console/jobs.js", "/console/batches.js", "/console/tails.js", "/console/actions.js", "/console/ui.js"} {
		resp, err := http.Get(srv.URL + name)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, name)
		require.NotRegexp(t, `(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`, string(body), "%s refers to another origin", name)
		require.NotContains(t, string(body), "token=", "%s puts a token in a URL", name)
		require.NotContains(t, string(body), "EventSource(", name)
	}
}

// TestConsole_ModulesResolve: every module a page script imports is
// served, and every asset is reachable from the page.
func TestConsole_ModulesResolve(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(console.Handler())
	t.Cleanup(srv.Close)
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	seen := map[string]bool{}
	var walk func(path string)
	walk = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		code, body := get(path)
		require.Equal(t, http.StatusOK, code, "%s, imported", path)
		for _, m := range regexp.MustCompile(`(?:from |src=|href=)"(\.?/[^"#]*\.(?:js|css))"`).FindAllStringSubmatch(body, -1) {
			next := m[1]
			if strings.HasPrefix(next, "./") {
				next = console.Prefix + strings.TrimPrefix(next, "./")
			}
			walk(next)
		}
	}
	walk("/")
	entries, err := fs.ReadDir(console.Assets(), ".")
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() != "index.html" {
			require.True(t, seen[console.Prefix+e.Name()], "%s is served but nothing loads it", e.Name())
		}
	}
}
