package conductor

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/conductor-run/conductor/internal/tlsconf"
)

// The embedded cluster's settings (Config.ClusterListen and the rest;
// cluster.go): checked, and their defaults filled in, by New through
// checkReplicas; then read only.

// Defaults of the cluster settings.
const (
	defaultClusterName = "conductor"
	defaultClusterWait = 5 * time.Minute
)

// routeUser is the user name a route presents, with Config.ClusterSecret
// as its password.
const routeUser = "conductor-route"

// clustered reports whether the embedded server is a node of a cluster.
func (c *Config) clustered() bool { return c.ClusterListen != "" }

// checkCluster checks the cluster settings of c and fills in their
// defaults.
func (c *Config) checkCluster() error {
	if !c.clustered() {
		if len(c.ClusterRoutes) > 0 || c.ClusterName != "" || c.ClusterSecret != "" || c.ClusterWait != 0 || c.ClusterTLSCA != "" {
			return errors.New("conductor: cluster settings (--cluster-routes, --cluster-name, --cluster-secret-file, --cluster-tls-ca) need a route listener (--cluster HOST:PORT)")
		}
		return nil
	}
	switch {
	case c.NATSURL != "":
		return errors.New("conductor: --cluster makes the embedded server a node of a cluster, --nats-url uses NATS servers of your own: give one of them")
	case c.inProcess:
		return errors.New("conductor: an in-process conductor cannot be a node of a cluster")
	case c.ClusterWait < 0:
		return fmt.Errorf("conductor: bad cluster wait %s: want a positive duration, or 0 for the default", c.ClusterWait)
	case c.ClusterTLSCA != "" && c.TLSCert == "":
		return errors.New("conductor: --cluster-tls-ca checks the nodes' certificates: give each node its own (--tls-cert, --tls-key)")
	case len(c.ClusterRoutes) == 0:
		return errors.New("conductor: --cluster needs the cluster's nodes (--cluster-routes nats-route://HOST:PORT,...): JetStream forms its cluster from the routes it is given")
	}
	if _, _, err := splitHostPort(c.ClusterListen); err != nil {
		return fmt.Errorf("conductor: cluster listen address (--cluster): %w", err)
	}
	for _, r := range c.ClusterRoutes {
		if _, err := parseRoute(r); err != nil {
			return err
		}
	}
	c.ClusterName = cmp.Or(c.ClusterName, defaultClusterName)
	if strings.ContainsAny(c.ClusterName, " \t\r\n") {
		return fmt.Errorf("conductor: bad cluster name %q (--cluster-name): no spaces", c.ClusterName)
	}
	if c.ServerName == "" {
		host, err := os.Hostname()
		if err != nil || host == "" {
			return fmt.Errorf("conductor: no server name (--server-name), and the hostname is unknown: %v", err)
		}
		c.ServerName = host
	}
	if strings.ContainsAny(c.ServerName, " \t\r\n") {
		return fmt.Errorf("conductor: bad server name %q (--server-name): no spaces", c.ServerName)
	}
	c.ClusterWait = cmp.Or(c.ClusterWait, defaultClusterWait)
	c.nodes = c.countNodes()
	if c.ClusterSecret == "" && !loopback(c.ClusterListen) && !c.Insecure {
		return fmt.Errorf("conductor: the route listener on %s (--cluster) would take routes beyond this machine with no secret: any server that reaches it could join the cluster and read every stream, whatever the clients' tokens; give every node the same --cluster-secret-file, listen on 127.0.0.1, or accept it with --insecure", c.ClusterListen)
	}
	return nil
}

// parseRoute parses a route URL of ClusterRoutes: nats-route:// (or
// nats://) HOST:PORT, with no user (the secret is ClusterSecret's).
func parseRoute(r string) (*url.URL, error) {
	u, err := url.Parse(r)
	if err != nil {
		return nil, fmt.Errorf("conductor: bad route %q (--cluster-routes): %w", r, err)
	}
	switch {
	case u.Scheme != "nats-route" && u.Scheme != "nats":
		return nil, fmt.Errorf("conductor: bad route %q (--cluster-routes): want nats-route://HOST:PORT", r)
	case u.User != nil:
		return nil, fmt.Errorf("conductor: bad route %q (--cluster-routes): no user in a route; the routes' secret is --cluster-secret-file's", r)
	case u.Hostname() == "" || u.Port() == "":
		return nil, fmt.Errorf("conductor: bad route %q (--cluster-routes): want nats-route://HOST:PORT", r)
	case u.Path != "" && u.Path != "/":
		return nil, fmt.Errorf("conductor: bad route %q (--cluster-routes): want nats-route://HOST:PORT, no path", r)
	}
	if _, _, err := splitHostPort(u.Host); err != nil {
		return nil, fmt.Errorf("conductor: bad route %q (--cluster-routes): %w", r, err)
	}
	return u, nil
}

// routes are the route URLs the server solicits, each with the routes'
// secret (a route presents its user in its URL).
func (c *Config) routes() []*url.URL {
	var out []*url.URL
	for _, r := range c.ClusterRoutes {
		u, _ := parseRoute(r) // checked by checkCluster
		u.Scheme = "nats-route"
		if c.ClusterSecret != "" {
			u.User = url.UserPassword(routeUser, c.ClusterSecret)
		}
		out = append(out, u)
	}
	return out
}

// clusterSize is the count of nodes, counted by checkCluster.
func (c *Config) clusterSize() int { return c.nodes }

// countNodes counts the nodes: the distinct routes, and this node if its
// own route is not among them.
func (c *Config) countNodes() int {
	var hosts []string
	self := false
	for _, r := range c.ClusterRoutes {
		u, _ := parseRoute(r)
		if slices.Contains(hosts, u.Host) {
			continue
		}
		hosts = append(hosts, u.Host)
		self = self || ownRoute(c.ClusterListen, u)
	}
	if !self {
		return len(hosts) + 1
	}
	return len(hosts)
}

// ownRoute reports whether route u names the route listener listen, as
// far as this machine can tell: the same port, and the same host, or one
// whose addresses are this machine's (a wildcard listener takes them
// all).
func ownRoute(listen string, u *url.URL) bool {
	host, port, err := splitHostPort(listen)
	if err != nil || port == 0 || strconv.Itoa(port) != u.Port() {
		return false
	}
	if strings.EqualFold(host, u.Hostname()) {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", u.Hostname())
	if err != nil {
		return false
	}
	switch ip := net.ParseIP(host); {
	case ip != nil && !ip.IsUnspecified(): // an address
		return slices.ContainsFunc(ips, ip.Equal)
	case ip == nil && host != "": // a name, which must resolve as the route's does
		own, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
		return err == nil && slices.ContainsFunc(ips, func(ip net.IP) bool { return slices.ContainsFunc(own, ip.Equal) })
	}
	// A wildcard: any address of this machine.
	local, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(ips, func(ip net.IP) bool {
		return ip.IsLoopback() || slices.ContainsFunc(local, func(a net.Addr) bool {
			n, ok := a.(*net.IPNet)
			return ok && n.IP.Equal(ip)
		})
	})
}

// routeTLS is the routes' TLS: each node presents its certificate
// (TLSCert) both ways, as the server of the routes it accepts and the
// client of those it makes, and requires of the other a certificate
// signed by ClusterTLSCA (default TLSCA, else the system's roots), for
// the name or address its route names. So a node's certificate needs both
// the server and the client use, and the names of the routes.
func (c *Config) routeTLS() (*tls.Config, error) {
	rt, err := tlsconf.Client(tlsconf.Files{Cert: c.TLSCert, Key: c.TLSKey, CA: cmp.Or(c.ClusterTLSCA, c.TLSCA)})
	if err != nil {
		return nil, fmt.Errorf("conductor: the routes' TLS: %w", err)
	}
	rt.ClientCAs, rt.ClientAuth = rt.RootCAs, tls.RequireAndVerifyClientCert
	return rt, nil
}
