package conductor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

// clusterSecret is the routes' secret of the test clusters.
const clusterSecret = "route-secret-of-the-test"

// embeddedCluster is n conductors, each embedding a node of one cluster
// routed on 127.0.0.1, with the same credentials (each node its own copy
// of the file, as on n machines).
type embeddedCluster struct {
	nodes  []*conductor.Conductor
	logs   []*syncLog
	tokens map[string]string // by credential id
	ca     string            // the issuer of the nodes' certificates (ClusterTLSCA), with TLS
}

// clusterConfigs returns the configurations of n nodes of a cluster on
// free route ports of 127.0.0.1, each with a data directory of its own
// holding a copy of the credentials creds (their tokens in the returned
// map), logging to t and to the returned logs.
func clusterConfigs(t *testing.T, n int, creds ...auth.Credential) ([]conductor.Config, []*syncLog, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials.json")
	tokens := map[string]string{}
	for _, cr := range creds {
		tok, err := auth.Add(file, cr, false)
		require.NoError(t, err)
		tokens[cr.ID] = tok
	}
	ports := freeRoutePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	cfgs := make([]conductor.Config, n)
	logs := make([]*syncLog, n)
	for i := range cfgs {
		data := t.TempDir()
		logs[i] = &syncLog{}
		cfgs[i] = conductor.Config{
			DataDir: data, NATSListen: "127.0.0.1:0",
			ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[i]), ClusterRoutes: routes,
			ClusterName: "test", ServerName: fmt.Sprintf("n%d", i+1), ClusterSecret: clusterSecret,
			CredentialsCheck: 20 * time.Millisecond,
			Logger:           slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs[i]), nil)).With("node", i+1),
		}
		if len(creds) > 0 {
			b, err := os.ReadFile(file)
			require.NoError(t, err)
			cfgs[i].Credentials = filepath.Join(data, "credentials.json")
			require.NoError(t, os.WriteFile(cfgs[i].Credentials, b, 0o600))
		}
	}
	return cfgs, logs, tokens
}

// startEmbeddedCluster starts a cluster of three conductors one after
// another: the first waits for a quorum, and says so, until the second
// is up.
func startEmbeddedCluster(t *testing.T, creds ...auth.Credential) *embeddedCluster {
	t.Helper()
	cfgs, logs, tokens := clusterConfigs(t, 3, creds...)
	return startNodes(t, cfgs, logs, tokens)
}

// startNodes starts conductors with cfgs one after another, as
// startEmbeddedCluster says.
func startNodes(t *testing.T, cfgs []conductor.Config, logs []*syncLog, tokens map[string]string) *embeddedCluster {
	t.Helper()
	ec := &embeddedCluster{logs: logs, tokens: tokens, ca: cfgs[0].ClusterTLSCA}
	started := make(chan error, len(cfgs))
	for i, cfg := range cfgs {
		c, err := conductor.New(cfg)
		require.NoError(t, err)
		t.Cleanup(c.Stop)
		ec.nodes = append(ec.nodes, c)
		go func() { started <- c.Start(context.Background()) }()
		if i == 0 {
			require.Eventually(t, func() bool { return strings.Contains(logs[0].String(), "waiting for a quorum") }, 20*time.Second, 10*time.Millisecond,
				"the first node says it waits for a quorum")
		}
	}
	deadline := time.After(120 * time.Second)
	for range cfgs {
		select {
		case err := <-started:
			require.NoError(t, err)
		case <-deadline:
			t.Fatal("the cluster's conductors did not start within 60s")
		}
	}
	return ec
}

// connect connects to node i with the token of credential id ("" for
// none), reconnecting to the others when it goes.
func (ec *embeddedCluster) connect(t *testing.T, i int, id string) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if id != "" {
		opts = append(opts, client.WithToken(ec.tokens[id]))
	}
	if ec.ca != "" {
		opts = append(opts, nats.RootCAs(ec.ca))
	}
	nc, err := nats.Connect(ec.nodes[i].NATSURL(), opts...)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// freeRoutePorts returns n TCP ports free on 127.0.0.1 a moment ago.
func freeRoutePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// runSquare submits n to squares through c and waits for its result.
func runSquare(t *testing.T, c *client.Client, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := c.Submit(ctx, "squares", n)
	require.NoError(t, err)
	j, err := c.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, fmt.Sprint(n*n), string(j.Result))
}

// TestConductor_EmbeddedCluster: three conductords, each embedding a
// node, started one after another, form one cluster: every stream and
// bucket is R3; a job submitted on node 1 runs on a host whose workerd,
// with a host credential, is connected to node 2, and one submitted on
// node 3 too; once the node that leads the job stream stops, the other
// two keep taking jobs and running them.
func TestConductor_EmbeddedCluster(t *testing.T) {
	t.Parallel()
	ec := startEmbeddedCluster(t,
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "h1", Role: auth.Host, Types: []string{"squares"}},
	)
	for i := range ec.nodes {
		js, err := jetstream.New(ec.connect(t, i, "root"))
		require.NoError(t, err)
		requireReplicas(t, js, 3, true)
	}

	host := ec.connect(t, 1, "h1")
	self, err := os.Executable()
	require.NoError(t, err)
	a, err := agent.New(agent.Config{
		Conn: host, Host: "h1", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Pools: []broker.Spec{{Name: "squares", Count: 1, Cmd: []string{self}}},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)

	clients := make([]*client.Client, len(ec.nodes))
	for i := range ec.nodes {
		clients[i], err = client.New(ec.connect(t, i, "root"), client.Config{})
		require.NoError(t, err)
	}
	runSquare(t, clients[0], 7)
	runSquare(t, clients[2], 8)

	// Stop the node that leads the job stream.
	space, _ := subject.New("default")
	js, err := jetstream.New(ec.connect(t, 0, "root"))
	require.NoError(t, err)
	s, err := js.Stream(t.Context(), space.JobStream())
	require.NoError(t, err)
	info, err := s.Info(t.Context())
	require.NoError(t, err)
	require.NotNil(t, info.Cluster)
	leader := -1
	for i := range ec.nodes {
		if info.Cluster.Leader == fmt.Sprintf("n%d", i+1) {
			leader = i
		}
	}
	require.NotEqual(t, -1, leader, "a node leads the job stream: %+v", info.Cluster)
	t.Logf("stopping n%d, the job stream's leader", leader+1)
	ec.nodes[leader].Stop()
	for i := range ec.nodes {
		if i != leader {
			runSquare(t, clients[i], 10+i)
		}
	}
}

// TestConductor_EmbeddedClusterWaitBounded: a node whose peers never
// come waits for them no longer than ClusterWait, nor than Start's
// context, and says what it waited for.
func TestConductor_EmbeddedClusterWaitBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wait time.Duration
		ctx  time.Duration
	}{
		{"ClusterWait", 300 * time.Millisecond, time.Minute},
		{"Context", time.Minute, 300 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfgs, _, _ := clusterConfigs(t, 3)
			cfgs[0].ClusterWait = tc.wait
			c, err := conductor.New(cfgs[0])
			require.NoError(t, err)
			t.Cleanup(c.Stop)
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctx)
			defer cancel()
			err = c.Start(ctx)
			require.ErrorContains(t, err, "the cluster test has no JetStream meta leader: fewer than 2 of its 3 nodes are up")
		})
	}
}

// TestConductor_EmbeddedClusterRefusesNamespaces: credentials of another
// namespace are refused on a cluster, at start.
func TestConductor_EmbeddedClusterRefusesNamespaces(t *testing.T) {
	t.Parallel()
	cfgs, _, _ := clusterConfigs(t, 3,
		auth.Credential{ID: "root", Role: auth.Admin},
		auth.Credential{ID: "other", Role: auth.Admin, Namespace: "other"},
	)
	c, err := conductor.New(cfgs[0])
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	require.ErrorIs(t, c.Start(context.Background()), conductor.ErrClusterNamespaces)
}

// TestNew_ClusterRefused: cluster settings New refuses, and those it
// takes.
func TestNew_ClusterRefused(t *testing.T) {
	t.Parallel()
	routes := []string{"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"}
	base := func() conductor.Config {
		return conductor.Config{DataDir: t.TempDir(), ClusterListen: "127.0.0.1:6222", ClusterRoutes: routes, ServerName: "n1"}
	}
	for _, tc := range []struct {
		name string
		edit func(*conductor.Config)
		want string // "" when taken
	}{
		{"Loopback", func(*conductor.Config) {}, ""},
		{"RoutesWithoutListener", func(c *conductor.Config) { c.ClusterListen = "" }, "need a route listener (--cluster HOST:PORT)"},
		{"SecretWithoutListener", func(c *conductor.Config) { c.ClusterListen, c.ClusterRoutes, c.ClusterSecret = "", nil, "s" }, "need a route listener"},
		{"NATSURL", func(c *conductor.Config) { c.NATSURL = "nats://127.0.0.1:4222" }, "give one of them"},
		{"NoRoutes", func(c *conductor.Config) { c.ClusterRoutes = nil }, "needs the cluster's nodes"},
		{"BadListen", func(c *conductor.Config) { c.ClusterListen = "127.0.0.1" }, "cluster listen address"},
		{"RouteScheme", func(c *conductor.Config) { c.ClusterRoutes = []string{"http://a:6222"} }, "want nats-route://HOST:PORT"},
		{"RouteNoPort", func(c *conductor.Config) { c.ClusterRoutes = []string{"nats-route://a"} }, "want nats-route://HOST:PORT"},
		{"RouteUser", func(c *conductor.Config) { c.ClusterRoutes = []string{"nats-route://u:p@a:6222"} }, "no user in a route"},
		{"OpenBeyondLoopback", func(c *conductor.Config) { c.ClusterListen = "0.0.0.0:6222" }, "with no secret"},
		{"SecretBeyondLoopback", func(c *conductor.Config) { c.ClusterListen, c.ClusterSecret = "0.0.0.0:6222", "s" }, ""},
		{"InsecureBeyondLoopback", func(c *conductor.Config) { c.ClusterListen, c.Insecure = "0.0.0.0:6222", true }, ""},
		{"ServerNameSpace", func(c *conductor.Config) { c.ServerName = "a b" }, "bad server name"},
		{"ReplicasPastSize", func(c *conductor.Config) { c.Replicas = 4 }, "on a cluster of 3 nodes"},
		{"Replicas3", func(c *conductor.Config) { c.Replicas = 3 }, ""},
		// The size counts this node when its own route is not listed...
		{"PeersOnly", func(c *conductor.Config) { c.ClusterRoutes, c.Replicas = routes[1:], 4 }, "on a cluster of 3 nodes"},
		// ...and knows it on a wildcard listener, by its port on a local address.
		{"WildcardSelf", func(c *conductor.Config) { c.ClusterListen, c.ClusterSecret, c.Replicas = "0.0.0.0:6222", "s", 4 }, "on a cluster of 3 nodes"},
		{"Duplicates", func(c *conductor.Config) { c.ClusterRoutes, c.Replicas = append(routes, routes[1]), 4 }, "on a cluster of 3 nodes"},
		{"ClusterCAWithoutCert", func(c *conductor.Config) { c.ClusterTLSCA = "ca.pem" }, "give each node its own (--tls-cert, --tls-key)"},
		{"ClusterCAWithoutListener", func(c *conductor.Config) { c.ClusterListen, c.ClusterRoutes, c.ClusterTLSCA = "", nil, "ca.pem" }, "need a route listener"},
		{"NegativeWait", func(c *conductor.Config) { c.ClusterWait = -time.Second }, "bad cluster wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.edit(&cfg)
			_, err := conductor.New(cfg)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// nodeCerts writes a CA, and a certificate it signed for 127.0.0.1 and
// localhost with both the server and the client use (a node's, for its
// routes both ways), and returns their files.
func nodeCerts(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test nodes CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	nodeKey := newKey()
	nodeTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTmpl, caCert, &nodeKey.PublicKey, caKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(nodeKey)
	require.NoError(t, err)
	return write("ca.pem", "CERTIFICATE", caDER), write("node.pem", "CERTIFICATE", nodeDER), write("node-key.pem", "EC PRIVATE KEY", keyDER)
}

// TestConductor_EmbeddedClusterTLS: with a certificate (--tls-cert), the
// routes speak TLS, each node presenting its certificate both ways: three
// nodes form the cluster and place every stream at R3. A node whose
// certificate another CA signed is not routed, though it has the secret:
// alone, it finds no quorum.
func TestConductor_EmbeddedClusterTLS(t *testing.T) {
	t.Parallel()
	ca, cert, key := nodeCerts(t)
	cfgs, logs, tokens := clusterConfigs(t, 3, auth.Credential{ID: "root", Role: auth.Admin})
	for i := range cfgs {
		cfgs[i].TLSCert, cfgs[i].TLSKey, cfgs[i].ClusterTLSCA = cert, key, ca
	}
	ec := startNodes(t, cfgs, logs, tokens)
	js, err := jetstream.New(ec.connect(t, 0, "root"))
	require.NoError(t, err)
	requireReplicas(t, js, 3, true)

	// A fourth node, its routes to the three, with a certificate of its own CA.
	_, otherCert, otherKey := nodeCerts(t)
	stranger, _, _ := clusterConfigs(t, 1)
	stranger[0].ClusterRoutes = cfgs[0].ClusterRoutes
	stranger[0].ServerName, stranger[0].ClusterWait = "n4", 2*time.Second
	stranger[0].TLSCert, stranger[0].TLSKey, stranger[0].ClusterTLSCA = otherCert, otherKey, ca
	c, err := conductor.New(stranger[0])
	require.NoError(t, err)
	t.Cleanup(c.Stop)
	require.ErrorContains(t, c.Start(context.Background()), "has no JetStream meta leader")
}

// TestConductor_EmbeddedClusterRestart: an open cluster (no token, on
// loopback) whose three conductords all stop and start again at once: the
// job queued before is still queued, and runs on a host of node 2; then
// node 2 stops, and the host, connected to another node, runs the next.
func TestConductor_EmbeddedClusterRestart(t *testing.T) {
	t.Parallel()
	cfgs, logs, tokens := clusterConfigs(t, 3)
	ec := startNodes(t, cfgs, logs, tokens)
	cl, err := client.New(ec.connect(t, 0, ""), client.Config{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id, err := cl.Submit(ctx, "squares", 4)
	require.NoError(t, err)
	cl.Close()
	for _, c := range ec.nodes {
		c.Stop()
	}

	// The restart has a time of its own: what came before must not eat
	// into it. Three servers recovering their streams and electing their
	// leaders take 10-15s here, and near a minute under -race on two cores
	// shared with other packages' tests (its speed is not what this test
	// checks).
	ctx, cancel = context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	again := &embeddedCluster{}
	began := time.Now()
	defer func() { t.Logf("the three conductords started again in %s", time.Since(began).Round(time.Millisecond)) }()
	started := make(chan error, len(cfgs))
	for _, cfg := range cfgs {
		c, err := conductor.New(cfg)
		require.NoError(t, err)
		t.Cleanup(c.Stop)
		again.nodes = append(again.nodes, c)
		go func() { started <- c.Start(ctx) }()
	}
	for range cfgs {
		select {
		case err := <-started:
			require.NoError(t, err)
		case <-ctx.Done():
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatal("the cluster's conductors did not start again within 3 minutes")
		}
	}
	cl, err = client.New(again.connect(t, 2, ""), client.Config{})
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	j, err := cl.Job(ctx, id)
	require.NoError(t, err)
	require.Equal(t, client.StatusQueued, j.Status)

	self, err := os.Executable()
	require.NoError(t, err)
	a, err := agent.New(agent.Config{
		Conn: again.connect(t, 1, ""), Host: "h1", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		Pools: []broker.Spec{{Name: "squares", Count: 1, Cmd: []string{self}}},
	})
	require.NoError(t, err)
	require.NoError(t, a.Start(context.Background()))
	t.Cleanup(a.Stop)
	j, err = cl.Wait(ctx, id)
	require.NoError(t, err)
	require.Equal(t, client.StatusSucceeded, j.Status)
	require.JSONEq(t, "16", string(j.Result))

	// The host's node goes: the host reconnects to another, and runs the
	// next job submitted on node 3.
	t.Log("stopping n2, the host's node")
	again.nodes[1].Stop()
	runSquare(t, cl, 5)
}
