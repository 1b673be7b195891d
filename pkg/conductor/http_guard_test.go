package conductor_test

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// setupHTTP starts a conductor serving its HTTP API on a port of its own
// (the real listener, as conductord runs it), and returns its base URL.
func setupHTTP(t *testing.T, cfg conductor.Config) (*conductor.Conductor, *testBundle, string) {
	t.Helper()
	cfg.HTTPListen = "127.0.0.1:0"
	c, bundle := setup(t, cfg)
	return c, bundle, "http://" + c.HTTPAddr()
}

// do sends method to url+path with body and headers (a "Host" header sets
// the request's Host), and returns the status and the answer.
func do(t *testing.T, method, url, path, body string, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url+path, strings.NewReader(body))
	require.NoError(t, err)
	for k, v := range headers {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return readAnswer(t, resp)
}

// With no token, a web page the operator visits cannot make the browser
// post a pool upgrade: a "simple" cross-origin request (a form's POST,
// Content-Type text/plain, no custom header) is refused before it reaches
// any host, as browsers old and new send it; the same request from the
// API's own origin (the dashboard), or from a program that sends no
// Origin (curl), is served.
func TestConductor_HTTPRefusesCrossOriginWrites(t *testing.T) {
	t.Parallel()
	_, bundle, url := setupHTTP(t, conductor.Config{})
	host := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares")})
	const upgrade = `{"cmd":"sh -c 'touch /tmp/pwned'"}`
	self := "http://" + strings.TrimPrefix(url, "http://")

	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"a page of another site", map[string]string{
			"Content-Type": "text/plain", "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}},
		{"a page of a sibling site", map[string]string{
			"Content-Type": "text/plain", "Origin": "http://a.localhost:8080", "Sec-Fetch-Site": "same-site"}},
		{"an older browser: Origin only", map[string]string{
			"Content-Type": "text/plain", "Origin": "http://evil.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, http.MethodPost, url, "/v1/pools/squares/upgrade", upgrade, tc.headers)
			require.Equal(t, http.StatusForbidden, code, body)
			require.Contains(t, body, `"error":"cross-origin request refused (cross-origin request detected`)
			require.Contains(t, body, "a web page of another site may not change anything here")
		})
	}
	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"the dashboard's own origin", map[string]string{"Origin": self, "Sec-Fetch-Site": "same-origin"}},
		{"typed in the address bar", map[string]string{"Sec-Fetch-Site": "none"}},
		{"curl", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, http.MethodPost, url, "/v1/pools/squares/upgrade", upgrade, tc.headers)
			require.Equal(t, http.StatusAccepted, code, body)
			require.Equal(t, wire.Command{Op: "upgrade", Pool: "squares", Cmd: []string{"sh", "-c", "touch /tmp/pwned"}}, host.next(t))
		})
	}
	require.Empty(t, host.commands, "no refused request reached the host")

	// Reads are safe methods: a cross-site GET is served (the browser
	// keeps its answer from the page).
	code, body := do(t, http.MethodGet, url, "/v1/pools", "", map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
	require.Equal(t, http.StatusOK, code, body)
}

// A request whose Host is not one of the server's names is refused,
// whatever its method or path, so that a page whose domain is rebound to
// 127.0.0.1 (DNS rebinding) can neither drive the API nor read it; the
// server's own names pass, and names given by Config.HTTPHosts
// (--http-host).
func TestConductor_HTTPRefusesForeignHost(t *testing.T) {
	t.Parallel()
	_, bundle, url := setupHTTP(t, conductor.Config{HTTPHosts: []string{"conductor.internal"}})
	host := startFakeHost(t, bundle.nc, fakeHostConfig{id: "a", pools: running("squares")})
	port := url[strings.LastIndex(url, ":")+1:]
	hostname, err := os.Hostname()
	require.NoError(t, err)

	for _, tc := range []struct{ method, path, host string }{
		{http.MethodGet, "/v1/pools", "evil.example"},
		{http.MethodGet, "/v1/pools", "evil.example:" + port},
		{http.MethodGet, "/v1/jobs?status=dead", "rebind.attacker.test:" + port},
		{http.MethodPost, "/v1/pools/squares/upgrade", "evil.example:" + port},
		{http.MethodGet, "/", "evil.example"},
		{http.MethodGet, "/healthz", "evil.example"},
		{http.MethodGet, "/v1/pools", "localhost.evil.example"},
		{http.MethodGet, "/v1/pools", "10.1.2.3:" + port}, // another address: the listener is 127.0.0.1's
	} {
		t.Run("refused "+tc.method+" "+tc.path+" "+tc.host, func(t *testing.T) {
			code, body := do(t, tc.method, url, tc.path, `{"cmd":"./w"}`, map[string]string{"Host": tc.host})
			require.Equal(t, http.StatusMisdirectedRequest, code, body)
			require.Contains(t, body, `is not a name of this conductord: refused, so that a web page cannot reach the API by DNS rebinding`)
			require.Contains(t, body, "--http-host")
		})
	}
	require.Empty(t, host.commands)

	for _, h := range []string{
		"", "127.0.0.1:" + port, "localhost:" + port, "LocalHost.", "[::1]:" + port, "::1",
		hostname, hostname + ":" + port, "conductor.internal:" + port,
	} {
		t.Run("served "+h, func(t *testing.T) {
			headers := map[string]string{}
			if h != "" {
				headers["Host"] = h
			}
			code, body := do(t, http.MethodGet, url, "/v1/pools", "", headers)
			require.Equal(t, http.StatusOK, code, body)
		})
	}
}

// A request with no Host header at all (HTTP/1.0, as some health checks
// send) is served: a browser always sends one.
func TestConductor_HTTPServesNoHost(t *testing.T) {
	t.Parallel()
	_, _, url := setupHTTP(t, conductor.Config{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = conn.Write([]byte("GET /healthz HTTP/1.0\r\n\r\n"))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	code, body := readAnswer(t, resp)
	require.Equal(t, http.StatusOK, code, body)
	require.True(t, strings.HasPrefix(body, `{"status":"ok",`), body)
}
