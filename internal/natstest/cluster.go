package natstest

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/conductor-run/conductor/internal/names"
)

// clusterSeq numbers the clusters of a test binary, so that their names
// differ.
var clusterSeq atomic.Int64

// clusterReady bounds the wait for a cluster's JetStream meta leader and
// its peers.
const clusterReady = 20 * time.Second

// Cluster starts n embedded JetStream servers routed into one cluster,
// each with a store of its own in the test's temp dir, waits until the
// JetStream meta leader sees all n as peers, and returns the servers; they
// shut down at cleanup. URLs joins their client URLs as a client takes
// them.
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	name := fmt.Sprintf("natstest-%d", clusterSeq.Add(1))
	// The route ports are fixed before the servers start: each is given
	// all of them (JetStream clustering wants configured routes), and
	// nats-server skips the route to itself.
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	// The stores first: a temp dir is removed by a cleanup of its own,
	// which must run after the servers' shutdown, registered later.
	stores := make([]string, n)
	for i := range stores {
		stores[i] = t.TempDir()
	}
	servers := make([]*server.Server, 0, n)
	t.Cleanup(func() {
		for _, ns := range servers {
			ns.Shutdown()
		}
		for _, ns := range servers {
			ns.WaitForShutdown()
		}
	})
	for i, p := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("%s-%d", name, i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			Cluster:    server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: p},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
			JetStream:  true,
			StoreDir:   stores[i],
			NoSigs:     true,
			NoLog:      os.Getenv(names.EnvTestNATSLog) == "",
		}
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("natstest: new server %s: %v", opts.ServerName, err)
		}
		if !opts.NoLog {
			ns.ConfigureLogger()
		}
		servers = append(servers, ns)
		ns.Start()
	}
	for _, ns := range servers {
		if !ns.ReadyForConnections(serverReady) {
			t.Fatalf("natstest: server %s not ready within %s", ns.Name(), serverReady)
		}
	}
	waitPeers(t, servers)
	return servers
}

// URLs is the client URLs of servers separated by commas, as
// nats.Connect (and conductord's --nats-url) take them.
func URLs(servers []*server.Server) string {
	urls := make([]string, len(servers))
	for i, ns := range servers {
		urls[i] = ns.ClientURL()
	}
	return strings.Join(urls, ",")
}

// waitPeers waits until one of servers is the JetStream meta leader and
// sees all of them as peers (a stream with as many replicas can be
// placed).
func waitPeers(t testing.TB, servers []*server.Server) {
	t.Helper()
	deadline := time.After(clusterReady)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, ns := range servers {
			if ns.JetStreamIsLeader() && len(ns.JetStreamClusterPeers()) == len(servers) {
				return
			}
		}
		select {
		case <-deadline:
			t.Fatalf("natstest: no JetStream meta leader seeing %d peers within %s", len(servers), clusterReady)
		case <-tick.C:
		}
	}
}

// freePorts returns n TCP ports free on 127.0.0.1 a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: free port: %v", err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}
