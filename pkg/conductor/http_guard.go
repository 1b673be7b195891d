package conductor

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
)

// The HTTP API's guard refuses, before any route or token check, what a web
// page could make a browser send it (docs/security.md, "The HTTP API"):
//
//   - a request whose Host is not one of the server's own names (421), so
//     that a page whose domain is rebound to this address (DNS rebinding)
//     can neither drive the API nor read its answers;
//   - a state-changing request (POST, PUT, PATCH, DELETE) from another
//     origin (403), as the browser tells it in Sec-Fetch-Site or Origin
//     (http.CrossOriginProtection), so that a page cannot post a pool
//     upgrade to 127.0.0.1 as a "simple" cross-origin request.
//
// Requests with neither header (curl, the Go client, conductorctl) and
// same-origin requests (the dashboard) pass.

// hostNames is the set of names the HTTP API answers to. It is built once by
// Handler and only read after.
type hostNames struct {
	names map[string]bool
	// anyIP accepts every IP literal: the API listens on a wildcard
	// address, so that every address of the machine is its own, and a name
	// that DNS rebinding could point at it is not an IP literal.
	anyIP bool
}

// newHostNames returns the names of a server listening on listen (HOST:PORT;
// empty: a listener of the caller's, whose host is not known): localhost,
// 127.0.0.1, ::1, the machine's hostname, listen's host when it is
// specific, any IP literal when it is a wildcard, and extra.
func newHostNames(listen string, extra []string) hostNames {
	h := hostNames{names: map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}}
	if name, err := os.Hostname(); err == nil && name != "" {
		h.names[canonicalHost(name)] = true
	}
	for _, n := range extra {
		h.names[canonicalHost(n)] = true
	}
	if listen == "" {
		return h
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return h
	}
	if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
		h.anyIP = true
	} else {
		h.names[canonicalHost(host)] = true
	}
	return h
}

// allows reports whether hostHeader (a request's Host, with or without a
// port) names this server. A request with no Host at all (HTTP/1.0, such as
// some load balancers' health checks) is allowed: a browser always sends
// one.
func (h hostNames) allows(hostHeader string) bool {
	if hostHeader == "" {
		return true
	}
	host := hostHeader
	if name, _, err := net.SplitHostPort(hostHeader); err == nil {
		host = name
	}
	host = canonicalHost(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	if h.names[host] {
		return true
	}
	if !h.anyIP {
		return false
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}

// canonicalHost is name in the form names are compared in: lower case, with
// no trailing dot.
func canonicalHost(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// checkHTTPHost checks a name given to Config.HTTPHosts: a DNS name or an IP
// address, with no port.
func checkHTTPHost(name string) error {
	if _, err := netip.ParseAddr(name); err == nil {
		return nil
	}
	if name == "" || len(name) > 253 || strings.ContainsFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_')
	}) {
		return fmt.Errorf("conductor: bad http host %q: want a DNS name or an IP address, with no port", name)
	}
	return nil
}

// guard wraps the API's routes in the Host and cross-origin checks.
func (c *Conductor) guard(next http.Handler) http.Handler {
	names := newHostNames(c.cfg.HTTPListen, c.cfg.HTTPHosts)
	cop := http.NewCrossOriginProtection()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !names.allows(r.Host) {
			c.log.Info("http request refused: not one of our names", "host", r.Host, "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusMisdirectedRequest, fmt.Sprintf(
				"host %q is not a name of this conductord: refused, so that a web page cannot reach the API by DNS rebinding; "+
					"call it by localhost, the address it listens on, or a name given to conductord --http-host", r.Host))
			return
		}
		if err := cop.Check(r); err != nil {
			c.log.Info("http request refused: cross-origin", "origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"),
				"remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			writeError(w, http.StatusForbidden, crossOriginError(err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossOriginError is the message of a request refused by
// http.CrossOriginProtection's err.
func crossOriginError(err error) string {
	return "cross-origin request refused (" + err.Error() + "): " +
		"a web page of another site may not change anything here; " +
		"send it from the dashboard's own origin, or from a program that sends no Origin or Sec-Fetch-Site header"
}
