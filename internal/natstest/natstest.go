// Package natstest starts embedded NATS servers with JetStream for tests:
// one per test (Server), or a JetStream cluster of several (Cluster), on
// random ports, storing into the test's temp dir, shut down by t.Cleanup.
// Set CONDUCTOR_TEST_NATS_LOG=1 to see the servers' logs.
package natstest

import (
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/names"
)

// serverReady bounds the wait for a server to take connections: long,
// for a machine whose cores the other tests of make test keep busy (10 s
// was seen to fall short).
const serverReady = 30 * time.Second

// Server starts an embedded JetStream server and returns it.
func Server(t testing.TB) *server.Server {
	t.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoSigs:    true,
		NoLog:     os.Getenv(names.EnvTestNATSLog) == "",
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	if !opts.NoLog {
		ns.ConfigureLogger()
	}
	ns.Start()
	if !ns.ReadyForConnections(serverReady) {
		ns.Shutdown()
		t.Fatalf("natstest: server not ready within %s", serverReady)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// Conn connects to ns and closes the connection at cleanup.
func Conn(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
