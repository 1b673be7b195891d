package conductor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/lookup"
)

// The embedded cluster (docs/deployment.md, "Embedded cluster"): with
// Config.ClusterListen, the embedded server is one node of a NATS cluster
// routed between conductords, each embedding a node, and JetStream is
// clustered across them. Checked by New (through checkReplicas), set up
// by startServer, waited for by ensureStreams; then read only.
//
// What crosses the routes is the namespace's account (the server's global
// one) and the system account: the job stream, the buckets, the
// JetStream API, and the service imports' answers all live there. A host
// credential's account (hostaccount.go) is made on each node from that
// node's credentials file, by the same name, and reaches the global
// account of its own node only, which routes the rest; so every node must
// read the same credentials. Another namespace's account holds streams of
// its own, which its nodes could not recover in order at a restart (the
// server applies the cluster's stream assignments before conductord makes
// the account): credentials of other namespaces are refused.

// clusterLogEvery is how often Start says again that it waits for the
// cluster.
const clusterLogEvery = 10 * time.Second

// clusterPoll is how often Start looks whether the cluster is ready.
const clusterPoll = 50 * time.Millisecond

// ErrClusterNamespaces is the error of credentials naming another
// namespace on an embedded cluster.
var ErrClusterNamespaces = errors.New("conductor: credentials of other namespaces are not supported on an embedded cluster (--cluster); run that namespace's conductord on a cluster of its own, or on NATS servers of your own (--nats-url)")

// clusterOptions makes opts a node of the cluster Config describes: its
// route listener, requiring ClusterSecret of every route, and the routes
// it solicits; with TLSCert, the routes speak TLS only (routeTLS).
func (c *Conductor) clusterOptions(opts *server.Options) error {
	host, port, _ := splitHostPort(c.cfg.ClusterListen)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts.ServerName = c.cfg.ServerName
	opts.Cluster = server.ClusterOpts{Name: c.cfg.ClusterName, Host: host, Port: port}
	if c.cfg.ClusterSecret != "" {
		opts.Cluster.Username, opts.Cluster.Password = routeUser, c.cfg.ClusterSecret
	}
	opts.Routes = c.cfg.routes()
	if c.cfg.TLSCert != "" {
		rt, err := c.cfg.routeTLS()
		if err != nil {
			return err
		}
		opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = rt, 5
	}
	return nil
}

// checkClusterCredentials refuses credentials the cluster cannot serve:
// those of other namespaces (see ErrClusterNamespaces).
func (c *Conductor) checkClusterCredentials() error {
	if ns := c.access.creds.Load().Namespaces(c.space.Namespace()); len(ns) > 0 {
		return fmt.Errorf("%w: %s", ErrClusterNamespaces, strings.Join(ns, ", "))
	}
	return nil
}

// awaitCluster waits, within ClusterWait and ctx, until this node knows
// the cluster's JetStream meta leader: a quorum of the nodes are up and
// routed, so that streams can be made. The first node started waits for
// the second, and says so.
func (c *Conductor) awaitCluster(ctx context.Context) error {
	if !c.cfg.clustered() {
		return nil
	}
	if leader := c.metaLeader(); leader != "" {
		c.log.Info("cluster ready", "cluster", c.cfg.ClusterName, "meta_leader", leader, "routes", c.ns.NumRoutes())
		return nil
	}
	size := c.cfg.clusterSize()
	c.log.Info("waiting for a quorum of the cluster's nodes to elect a JetStream meta leader; streams are made then",
		"cluster", c.cfg.ClusterName, "server", c.cfg.ServerName, "nodes", size, "quorum", size/2+1,
		"routes", c.ns.NumRoutes(), "wait", c.cfg.ClusterWait)
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ClusterWait)
	defer cancel()
	poll, say := time.NewTicker(clusterPoll), time.NewTicker(clusterLogEvery)
	defer poll.Stop()
	defer say.Stop()
	leader := ""
	for leader = c.metaLeader(); leader == ""; leader = c.metaLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("conductor: the cluster %s has no JetStream meta leader: fewer than %d of its %d nodes are up and routed to this one (--cluster-routes, --cluster-secret-file, --cluster-name): %w",
				c.cfg.ClusterName, size/2+1, size, context.Cause(ctx))
		case <-say.C:
			c.log.Info("still waiting for a quorum of the cluster's nodes", "cluster", c.cfg.ClusterName, "routes", c.ns.NumRoutes(), "quorum", size/2+1)
		case <-poll.C:
		}
	}
	c.log.Info("cluster ready", "cluster", c.cfg.ClusterName, "meta_leader", leader, "routes", c.ns.NumRoutes())
	return nil
}

// metaLeader is the name of the JetStream meta leader this node follows,
// once it is current with it; "" while there is none. (A node restarted
// with the cluster's state is current with no leader at all.)
func (c *Conductor) metaLeader() string {
	if !c.ns.JetStreamIsCurrent() {
		return ""
	}
	jsz, err := c.ns.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		return ""
	}
	return jsz.Meta.Leader
}

// clusterAPIWait bounds one JetStream API call of awaitPlacement: a
// request that reaches the meta leader as it changes, or races another
// node's for the same stream, may get no answer at all.
const clusterAPIWait = 5 * time.Second

// awaitPlacement calls create until the cluster can place what it makes,
// within ClusterWait and ctx: a quorum elects a meta leader, but replicas
// need as many nodes up as there are copies, and the nodes of a cluster
// start one after another. A call the API does not answer within
// clusterAPIWait is made again; any other error ends it.
func (c *Conductor) awaitPlacement(ctx context.Context, create func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ClusterWait)
	defer cancel()
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	said := time.Time{}
	for {
		call, done := context.WithTimeout(ctx, clusterAPIWait)
		err := create(call)
		done()
		unanswered := errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
		if err == nil || !noPeers(err) && !unanswered {
			return err
		}
		if time.Since(said) >= clusterLogEvery {
			msg := "waiting for the cluster's nodes to place the streams' replicas"
			if unanswered {
				msg = "the cluster did not answer (a leader being elected, or another node's request in flight): trying again"
			}
			c.log.Info(msg, "replicas", c.replicas, "routes", c.ns.NumRoutes(), "err", err)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %s: fewer than %d nodes up, or no answer)", err, c.cfg.ClusterWait, c.replicas)
		case <-poll.C:
		}
	}
}

// clusterCall calls create once, or on an embedded cluster as
// awaitPlacement does: the nodes of a cluster make the same streams at
// the same time at their start, and the API leaves some of those
// requests unanswered.
//
// With NATSURL, a call the servers leave unanswered is made again, for up
// to natsStartWait (awaitAnswer): a cluster that has just formed, or is
// electing a leader, leaves some unanswered, and conductord started with
// it (a compose file, a system boot) would otherwise exit.
func (c *Conductor) clusterCall(ctx context.Context, create func(context.Context) error) error {
	switch {
	case c.ns == nil:
		return c.awaitAnswer(ctx, create)
	case c.cfg.clustered():
		return c.awaitPlacement(ctx, create)
	}
	return create(ctx)
}

// natsStartWait bounds how long, with NATSURL, a call at start that the
// servers leave unanswered is made again.
const natsStartWait = 2 * time.Minute

// awaitAnswer calls create, each call bounded by clusterAPIWait, again
// every second while the servers leave it unanswered (its deadline, no
// responders), for up to natsStartWait or until ctx ends.
func (c *Conductor) awaitAnswer(ctx context.Context, create func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, natsStartWait)
	defer cancel()
	said := time.Time{}
	for {
		call, done := context.WithTimeout(ctx, clusterAPIWait)
		err := create(call)
		done()
		unanswered := ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) ||
			errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse))
		if !unanswered {
			return err
		}
		if time.Since(said) >= clusterLogEvery {
			c.log.Info("the NATS servers did not answer (a cluster forming, or a leader being elected): trying again", "err", err)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (no answer within %s)", err, natsStartWait)
		case <-time.After(time.Second):
		}
	}
}

// awaitFirstNode lets one node make the streams, buckets and consumers of
// a cluster's first start: the meta leader's. The JetStream API leaves
// unanswered the requests to make or update a new stream that come while
// another's request to make it is in flight (each then waits out its
// timeout), and the nodes of a cluster start at about the same time. Once
// the ends consumer that conductord makes last at start exists (at once,
// when the cluster has started before), or this node becomes the meta
// leader, or ClusterWait passes, this node goes on; what it makes then
// exists, and is answered at once.
func (c *Conductor) awaitFirstNode(ctx context.Context) error {
	if c.ns == nil || !c.cfg.clustered() {
		return nil
	}
	wait, cancel := context.WithTimeout(ctx, c.cfg.ClusterWait)
	defer cancel()
	poll := time.NewTicker(5 * clusterPoll)
	defer poll.Stop()
	said := false
	for !c.ns.JetStreamIsLeader() {
		call, done := context.WithTimeout(wait, clusterAPIWait)
		_, err := c.js.Consumer(call, c.space.EndsStream(), subject.EndsConsumer)
		done()
		if err == nil {
			if said {
				c.log.Info("the streams are made", "server", c.cfg.ServerName)
			}
			return nil
		}
		if !said {
			c.log.Info("the cluster's first start: waiting for the meta leader's conductord to make the streams", "server", c.cfg.ServerName)
			said = true
		}
		select {
		case <-wait.Done():
			if err := context.Cause(ctx); err != nil {
				return fmt.Errorf("conductor: wait for the cluster's streams: %w", err)
			}
			c.log.Warn("the streams were not made by another node within the cluster wait: making them here", "wait", c.cfg.ClusterWait)
			return nil
		case <-poll.C:
		}
	}
	return nil
}

// awaitLeaders makes the lookup bucket as startLookups does, and waits
// until the ends consumer answers if it exists, each as clusterCall does:
// Start makes or opens them next with no such wait. After the whole
// cluster restarts, each stream and consumer elects its leader, and a
// request to one without a leader goes unanswered; as the cluster forms,
// its routes settle, and the meta leader may take a node for offline for
// a moment, and place no new stream.
func (c *Conductor) awaitLeaders(ctx context.Context) error {
	if c.ns == nil || !c.cfg.clustered() {
		return nil
	}
	if err := c.clusterCall(ctx, func(ctx context.Context) error {
		_, err := lookup.Open(ctx, c.js, lookup.Config{
			Bucket: c.space.LookupBucket(), Memory: c.cfg.MemoryStorage, MaxBytes: c.lookupMaxBytes(), Replicas: c.replicas,
		})
		return err
	}); err != nil {
		return c.placeErr("lookup bucket", err)
	}
	if err := c.clusterCall(ctx, func(ctx context.Context) error {
		_, err := c.js.Consumer(ctx, c.space.EndsStream(), subject.EndsConsumer)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("conductor: the job ends consumer: %w", err)
	}
	return nil
}
