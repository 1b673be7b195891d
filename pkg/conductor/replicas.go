package conductor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The replica count of every stream and bucket the conductor makes
// (Config.Replicas): checked by New, chosen by Start before the first
// stream is made, then read only.

// MaxReplicas is the most copies JetStream keeps of a stream.
const MaxReplicas = 5

// clusterReplicas is the replica count chosen on a JetStream cluster
// when Config.Replicas is 0: a stream outlives the loss of one node.
const clusterReplicas = 3

// ErrReplicas is Start's error for a replica count the NATS server
// cannot place: fewer JetStream servers up than the count, or a server
// not in a JetStream cluster.
var ErrReplicas = errors.New("conductor: the NATS server cannot place the replicas asked for (--replicas)")

// The JetStream API's error codes of a stream it cannot place
// (nats-server's JSClusterNoPeersErrF), of replicas on a server not in a
// cluster (JSStreamReplicasNotSupportedErr), and of a cluster or account
// without the room for them (JSInsufficientResourcesErr).
const (
	errCodeNoPeers               jetstream.ErrorCode = 10005
	errCodeReplicasNotSupported  jetstream.ErrorCode = 10074
	errCodeInsufficientResources jetstream.ErrorCode = 10023
)

// checkReplicas checks c.Replicas, and the cluster settings it depends
// on (checkCluster).
func (c *Config) checkReplicas() error {
	if err := c.checkCluster(); err != nil {
		return err
	}
	switch {
	case c.Replicas < 0 || c.Replicas > MaxReplicas:
		return fmt.Errorf("conductor: bad replicas %d (--replicas): want 1 to %d, or 0 for the default", c.Replicas, MaxReplicas)
	case c.Replicas > 1 && c.NATSURL == "" && !c.clustered():
		return fmt.Errorf("conductor: replicas %d (--replicas) need a NATS cluster (--nats-url) or an embedded one (--cluster): the embedded server alone keeps one copy", c.Replicas)
	case c.clustered() && c.Replicas > c.clusterSize():
		return fmt.Errorf("conductor: replicas %d (--replicas) on a cluster of %d nodes (--cluster-routes): want %d at most", c.Replicas, c.clusterSize(), c.clusterSize())
	}
	return nil
}

// unplaceable reports whether err is the server's refusal to place a
// stream's replicas.
func unplaceable(err error) bool {
	return noPeers(err) || apiErrCode(err) == errCodeInsufficientResources
}

// noPeers reports whether err says the server has not the servers to
// place a stream's replicas on: it is not in a JetStream cluster, or
// fewer of the cluster's JetStream servers are up than replicas asked.
func noPeers(err error) bool {
	code := apiErrCode(err)
	return code == errCodeNoPeers || code == errCodeReplicasNotSupported
}

// apiErrCode is the JetStream API's error code in err, 0 if none.
func apiErrCode(err error) jetstream.ErrorCode {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode
	}
	return 0
}

// createJobStream creates or updates the job stream, and with it settles
// c.replicas: Config.Replicas, or with 0, 1 on the embedded server alone,
// 3 on an embedded cluster (its size if smaller), and on another server,
// 3 unless the server cannot place them (it is not in a JetStream
// cluster, or fewer than 3 of its JetStream servers are up), then 1. The
// server that places the replicas is the one asked: no client may read
// the JetStream cluster's size without the system account. On an
// embedded cluster, whose size is configured, conductord waits for the
// nodes to place them (awaitPlacement) rather than settle for fewer. A
// count given that the server cannot place is an error wrapping
// ErrReplicas.
func (c *Conductor) createJobStream(ctx context.Context, lim jobLimits) error {
	auto := c.cfg.Replicas == 0 && c.ns == nil
	switch {
	case c.cfg.Replicas > 0:
		c.replicas = c.cfg.Replicas
	case c.ns != nil && c.cfg.clustered():
		c.replicas = min(clusterReplicas, c.cfg.clusterSize())
	case auto:
		c.replicas = clusterReplicas
	default:
		c.replicas = 1
	}
	create := func(ctx context.Context) error {
		_, err := c.js.CreateOrUpdateStream(ctx, c.jobStreamConfig(lim))
		return err
	}
	// A peer offline is a cluster formed a moment ago, or a server
	// restarting: asked again for a while (placeAgain), as the other
	// streams are, before a count given fails or the automatic one
	// settles for 1.
	err := c.clusterCall(ctx, func(ctx context.Context) error {
		return placeAgain(ctx, func() error { return create(ctx) })
	})
	if err != nil && auto && noPeers(err) {
		c.log.Info("the NATS server cannot place 3 replicas (not a JetStream cluster, or fewer than 3 of its servers up): streams and buckets keep 1; --replicas sets it",
			"err", err)
		c.replicas = 1
		err = create(ctx)
	}
	if err != nil {
		return c.placeErr("job stream", err)
	}
	c.log.Info("streams and buckets replicated", "replicas", c.replicas)
	return nil
}

// placeErr is the error of making the stream or bucket what: with
// ErrReplicas if the server could not place its replicas.
func (c *Conductor) placeErr(what string, err error) error {
	if unplaceable(err) {
		return fmt.Errorf("%w: create %s with %d replicas: %w", ErrReplicas, what, c.replicas, err)
	}
	return fmt.Errorf("conductor: create %s: %w", what, err)
}

// placeWait bounds how long the making of a stream or bucket is tried
// again while the server says a peer it needs is offline: a server of a
// cluster that formed a moment ago, or is restarting (the compose
// cluster's conductord exited on one, the job stream refused "peer
// offline" a second after its servers started).
const placeWait = 15 * time.Second

// placeAgain calls make until it succeeds, fails for another reason than
// an offline peer, placeWait has passed, or ctx ends.
func placeAgain(ctx context.Context, make func() error) error {
	deadline := time.Now().Add(placeWait)
	for {
		err := make()
		if err == nil || !peerOffline(err) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// peerOffline reports whether err is the server's refusal to place
// replicas because a peer is offline, not for want of peers.
func peerOffline(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeNoPeers && strings.Contains(apiErr.Description, "offline")
}
