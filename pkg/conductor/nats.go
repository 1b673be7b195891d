package conductor

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// The conductor's NATS: the embedded server (or none, with NATSURL), the
// job stream and the buckets it makes sure exist, and the server's logs.
// Called by Start, on its goroutine.

// maxSubsPerConn bounds the subscriptions of one connection to the
// embedded server.
const maxSubsPerConn = 100_000

// startServer starts the embedded NATS server on NATSListen.
func (c *Conductor) startServer() error {
	host, port, _ := splitHostPort(c.cfg.NATSListen)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	// The server's own limit on the store is the whole filesystem, so
	// that it never refuses the state writes: the storage guard keeps the
	// room (storage.go). Its default, three quarters of what is free at
	// start, would refuse every write at once, states and acks included.
	maxStore, guard := int64(-1), false
	if !c.cfg.MemoryStorage {
		if err := os.MkdirAll(c.cfg.DataDir, 0o750); err != nil {
			return fmt.Errorf("conductor: data directory: %w", err)
		}
		_, total, err := diskSpace(c.cfg.DataDir)
		switch {
		case err != nil:
			c.log.Warn("no storage guard: the free space of the data directory is unknown", "data", c.cfg.DataDir, "err", err)
		case c.cfg.clustered():
			// The job stream's bounds are one setting of the cluster's,
			// which each node's guard would set from its own disk, and
			// the guard's restart of JetStream would take a node out of
			// its groups (docs/deployment.md, "Embedded cluster").
			maxStore = int64(total)
			c.log.Info("no storage guard on an embedded cluster: watch each node's free space", "data", c.cfg.DataDir)
		default:
			maxStore, guard = int64(total), true
		}
	}
	opts := &server.Options{
		ServerName: cmp.Or(c.cfg.ServerName, "conductord"),
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   c.cfg.DataDir,
		NoSigs:     true,
		MaxPayload: 8 << 20,
		// One connection\'s subscriptions cost the server memory: bounded
		// (conductor\'s own programs hold a few each).
		MaxSubs: maxSubsPerConn,
		// Every client is checked by access (access.go): conductord's
		// own, the Token, the credentials with their grants.
		CustomClientAuthentication: c.access,
		JetStreamMaxMemory:         -1,
		JetStreamMaxStore:          maxStore,
		SyncAlways:                 c.cfg.Sync == SyncAlways,
		SyncInterval:               c.cfg.SyncInterval,
	}
	if c.tls != nil {
		opts.TLSConfig, opts.TLS, opts.TLSVerify = c.tls, true, c.cfg.TLSVerify
		opts.TLSTimeout = 5
	}
	if c.cfg.clustered() {
		if err := c.checkClusterCredentials(); err != nil {
			return err
		}
		c.access.cluster = true
		if err := c.clusterOptions(opts); err != nil {
			return err
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("conductor: embedded NATS: %w", err)
	}
	logger := &natsLogger{log: c.log.With("component", "nats")}
	if guard {
		c.storage = newStorageGuard(c.cfg.DataDir, uint64(c.cfg.StorageReserve), c.cfg.StorageCheck, c.log.With("component", "storage"))
		c.storage.ns = ns
		c.storage.jsConfig = server.JetStreamConfig{
			StoreDir: c.cfg.DataDir, MaxStore: maxStore, MaxMemory: -1, Strict: true,
			SyncAlways: opts.SyncAlways, SyncInterval: opts.SyncInterval,
		}
		logger.observe = c.storage.serverLogged
	}
	ns.SetLoggerV2(logger, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return fmt.Errorf("conductor: embedded NATS not ready on %s within 30s", c.cfg.NATSListen)
	}
	c.ns = ns
	if err := c.access.setServer(ns); err != nil {
		ns.Shutdown()
		return err
	}
	c.log.Info("nats listening", "url", ns.ClientURL(), "data", c.cfg.DataDir, "sync", c.cfg.Sync, "sync_interval", c.cfg.SyncInterval)
	if c.cfg.clustered() {
		c.log.Info("cluster node listening for routes", "cluster", c.cfg.ClusterName, "server", opts.ServerName,
			"routes_listen", c.cfg.ClusterListen, "routes", c.cfg.ClusterRoutes, "nodes", c.cfg.clusterSize(), "route_secret", c.cfg.ClusterSecret != "", "route_tls", opts.Cluster.TLSConfig != nil)
	}
	return nil
}

func (c *Conductor) ensureStreams(ctx context.Context) error {
	// On an embedded cluster, no stream can be made before a quorum of
	// the nodes has a meta leader.
	if err := c.awaitCluster(ctx); err != nil {
		return err
	}
	if err := c.awaitFirstNode(ctx); err != nil {
		return err
	}
	storage := jetstream.FileStorage
	if c.cfg.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	// An account with a bound on its consumers (another namespace's, on
	// the embedded server) refuses a stream that asks for more.
	var info *jetstream.AccountInfo
	err := c.clusterCall(ctx, func(ctx context.Context) (err error) {
		info, err = c.js.AccountInfo(ctx)
		return err
	})
	if err == nil {
		c.accountConsumers.Store(int64(info.Limits.MaxConsumers))
	} else {
		c.log.Warn("the JetStream account's limits could not be read: the job stream asks for its consumers without them", "err", err)
	}
	var lim jobLimits
	if c.storage != nil {
		// Keep the limits the guard last set; it sets them again at its first check.
		if s, err := c.js.Stream(ctx, c.space.JobStream()); err == nil {
			cfg := s.CachedInfo().Config
			lim = jobLimits{msgs: cfg.MaxMsgs, bytes: cfg.MaxBytes}
		}
	}
	if err := c.createJobStream(ctx, lim); err != nil {
		return err
	}
	if err := c.clusterCall(ctx, c.removeUnreadJobs); err != nil {
		return err
	}
	states := jetstream.KeyValueConfig{
		Bucket:      c.space.StateBucket(),
		Description: "conductor job states by id",
		TTL:         c.cfg.Retention,
		Storage:     storage,
	}
	if c.archiving() {
		// Final states are written with a time to live of ArchiveAfter
		// (workerd reads it here), and archived meanwhile. A state that
		// expires leaves a marker for a second.
		states.LimitMarkerTTL = time.Second
		states.Metadata = map[string]string{names.MetaFinalTTL: c.cfg.ArchiveAfter.String()}
	}
	if err := c.ensureBucket(ctx, states, "job state bucket"); err != nil {
		return err
	}
	if err := c.clusterCall(ctx, func(ctx context.Context) error {
		return placeAgain(ctx, func() error {
			_, err := c.js.CreateOrUpdateStream(ctx, c.endsStreamConfig(storage))
			return err
		})
	}); err != nil {
		return c.placeErr("job ends stream", err)
	}
	if err := c.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      c.space.BatchBucket(),
		Description: "conductor batches by id",
		TTL:         c.cfg.Retention,
		Storage:     storage,
	}, "batch bucket"); err != nil {
		return err
	}
	if err := c.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      c.space.CancelBucket(),
		Description: "conductor cancelled job ids",
		TTL:         c.cfg.Retention,
		Storage:     storage,
	}, "cancel bucket"); err != nil {
		return err
	}
	if err := c.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      c.space.DeadBucket(),
		Description: "conductor dead jobs by id, kept until re-queued",
		Storage:     storage,
	}, "dead job bucket"); err != nil {
		return err
	}
	if err := c.ensurePayloadBucket(ctx, storage); err != nil {
		return err
	}
	if err := c.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      c.space.StatsBucket(),
		Description: "conductor job counts by type",
		Storage:     storage,
	}, "stats bucket"); err != nil {
		return err
	}
	if err := c.ensureLeaderBucket(ctx); err != nil {
		return err
	}
	return c.awaitLeaders(ctx)
}

// ensureBucket makes sure the key-value bucket of cfg exists as cfg says,
// with c.replicas; what names it in errors. (Its roll-ups stay allowed: turning them off
// is a stream update at every start, which nats-server races with the
// consumers made meanwhile, and the state bucket's expiry markers need
// them anyway; docs/security.md, "Not yet".)
func (c *Conductor) ensureBucket(ctx context.Context, cfg jetstream.KeyValueConfig, what string) error {
	cfg.Replicas = c.replicas
	if err := c.clusterCall(ctx, func(ctx context.Context) error {
		return placeAgain(ctx, func() error {
			_, err := c.js.CreateOrUpdateKeyValue(ctx, cfg)
			return err
		})
	}); err != nil {
		return c.placeErr(what, err)
	}
	if c.replicas > 1 {
		return c.readFromLeader(ctx, subject.KVStream(cfg.Bucket), what)
	}
	return nil
}

// endsStreamConfig is the job ends stream's configuration.
func (c *Conductor) endsStreamConfig(storage jetstream.StorageType) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.space.EndsStream(),
		Description: "conductor job ends of namespace " + c.cfg.Namespace + ", until conductord takes them",
		Subjects:    []string{c.space.AllJobEnds(), c.space.AllEndsAs()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     storage,
		// Kept while conductord is away, but not for ever.
		MaxAge:   c.cfg.Retention,
		Replicas: c.replicas,
	}
}

// readFromLeader has the replicated stream name answer reads from its
// leader only: a direct get, which JetStream lets any replica answer, may
// come from a follower a write behind, and a job's state read right after
// it was written (a wait woken by its end, a submission looked up) must
// not be found missing or older. Clients bind to a bucket with what its
// stream says then; one bound before the change reads directly until it
// binds again.
func (c *Conductor) readFromLeader(ctx context.Context, name, what string) error {
	stream, err := c.js.Stream(ctx, name)
	if err != nil {
		return fmt.Errorf("conductor: read the %s: %w", what, err)
	}
	cfg := stream.CachedInfo().Config
	if !cfg.AllowDirect {
		return nil
	}
	cfg.AllowDirect = false
	if _, err := c.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("conductor: have the %s read from its leader: %w", what, err)
	}
	return nil
}

// jobStreamSpareConsumers is the room the job stream keeps beyond its
// pools' consumers, for ephemeral readers (an operator's nats CLI, a
// repair).
const jobStreamSpareConsumers = 256

// jobStreamConsumers is the consumers the job stream takes: one per
// priority for every type MaxJobTypes allows, and jobStreamSpareConsumers,
// within its account's bound if it has one.
func (c *Conductor) jobStreamConsumers() int {
	n := len(c.space.JobSubjects())*c.cfg.MaxJobTypes + jobStreamSpareConsumers
	if lim := int(c.accountConsumers.Load()); lim > 0 {
		n = min(n, lim)
	}
	return n
}

// jobStreamConfig is the job stream's configuration with lim (0 or less:
// none). With an embedded file store, the storage guard sets lim, and a
// full stream refuses new jobs (DiscardNew) rather than drop old ones.
func (c *Conductor) jobStreamConfig(lim jobLimits) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:        c.space.JobStream(),
		Description: "conductor jobs of namespace " + c.cfg.Namespace,
		// Only the subjects a pool's consumers read: a job published to
		// any other is refused, not stored to be never run.
		Subjects:   c.space.JobSubjects(),
		Retention:  jetstream.WorkQueuePolicy,
		Storage:    jetstream.FileStorage,
		Duplicates: c.cfg.DedupWindow,
		// Headers carry the id and batch; leave them room on top of the payload.
		// A payload over the inline limit goes by reference.
		MaxMsgSize: int32(c.inlinePayload() + client.JobHeaderRoom),
		MaxMsgs:    cmp.Or(max(lim.msgs, 0), -1),
		MaxBytes:   cmp.Or(max(lim.bytes, 0), -1),
		Discard:    jetstream.DiscardNew,
		// Without it nats-server's default (1,000 a stream) would refuse
		// the 334th type's consumers.
		MaxConsumers: c.jobStreamConsumers(),
		// conductord reads the message of a job whose first state a host
		// writes (internal/hostsvc): a direct get, served by the stream,
		// not by the JetStream API's one queue. Only admins may ask. Not
		// replicated: a follower a write behind could answer
		// (readFromLeader).
		AllowDirect: c.replicas == 1,
		Replicas:    c.replicas,
	}
	if c.cfg.MemoryStorage {
		cfg.Storage = jetstream.MemoryStorage
	}
	return cfg
}

// removeUnreadJobs removes from the job stream the messages stored on a
// subject that no consumer reads (one ParseJob refuses). A stream created
// before its subjects were narrowed to JobSubjects (conductord before
// issue 15 took conductor.<ns>.jobs.>) may hold some: they were acked to
// their publisher, but no pool ever delivers them, nothing counts or
// shows them, and a work queue never removes them, while they count
// against the stream's limits. Each such subject is logged, with how many
// messages it held, before they go, so that their publisher can be found.
// So are those on a subject the stream takes but whose job type is not a
// valid token: no pool can have that name. (A subject filter cannot
// refuse them at publish.) One request lists the stream's subjects; there
// are few of them: a type and priority each.
func (c *Conductor) removeUnreadJobs(ctx context.Context) error {
	stream, info, err := c.jobStream(ctx)
	if err != nil {
		return fmt.Errorf("conductor: %w", err)
	}
	for subj, n := range info.State.Subjects {
		if typ, _ := c.space.ParseJob(subj); typ != "" {
			continue
		}
		if err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return fmt.Errorf("conductor: remove the jobs on %s, which no pool reads: %w", subj, err)
		}
		c.log.Warn("removed jobs stored on a subject that no pool reads; they were never run (a publisher names a wrong subject)",
			"subject", subj, "removed", n)
	}
	return nil
}

// jobStream opens the job stream and reads its info with the message
// count of each of its subjects.
func (c *Conductor) jobStream(ctx context.Context) (jetstream.Stream, *jetstream.StreamInfo, error) {
	stream, err := c.js.Stream(ctx, c.space.JobStream())
	if err != nil {
		return nil, nil, fmt.Errorf("read job stream: %w", err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(c.space.Jobs()))
	if err != nil {
		return nil, nil, fmt.Errorf("read job stream: %w", err)
	}
	return stream, info, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q in %q", p, addr)
	}
	return host, port, nil
}

// natsLogger sends the embedded server's log to slog: notices at Debug,
// warnings and errors as such, debug and trace dropped. observe, if set,
// also gets each warning and error (the storage guard's watch for write
// errors); set before the server starts, then read only.
type natsLogger struct {
	log     *slog.Logger
	observe func(msg string)
}

func (l *natsLogger) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "Slow Consumer") {
		// A client that reads too slowly loses messages, or its
		// connection: worth an operator's eye.
		l.log.Warn(msg)
		return
	}
	l.log.Debug(msg)
}
func (l *natsLogger) Warnf(format string, v ...any) {
	l.report(slog.LevelWarn, fmt.Sprintf(format, v...))
}
func (l *natsLogger) Fatalf(format string, v ...any) {
	l.report(slog.LevelError, fmt.Sprintf(format, v...))
}
func (l *natsLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "Error trying to connect to route") {
		// A node of an embedded cluster that is not up yet, or is
		// restarting: expected, and retried.
		l.report(slog.LevelWarn, msg)
		return
	}
	l.report(slog.LevelError, msg)
}
func (l *natsLogger) Debugf(string, ...any) {}
func (l *natsLogger) Tracef(string, ...any) {}

func (l *natsLogger) report(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
	if l.observe != nil {
		l.observe(msg)
	}
}

// ensureLeaderBucket makes sure the leader bucket exists (leader.go). One
// made before with another lease keeps it, and this conductord takes it:
// the lease is the namespace's, and a conductord started with another
// must not shorten the keys of the others, which renew at their own.
func (c *Conductor) ensureLeaderBucket(ctx context.Context) error {
	c.leaderLease = c.cfg.LeaderLease
	if kv, err := c.js.KeyValue(ctx, c.space.LeaderBucket()); err == nil {
		if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 && st.TTL() != c.leaderLease {
			c.log.Warn("the namespace's conductords elect their leader with another lease: this one takes it (--leader-lease must be the same on each; to change it, stop them all and delete the leader bucket)",
				"leader_lease", c.cfg.LeaderLease, "bucket_lease", st.TTL(), "bucket", c.space.LeaderBucket())
			c.leaderLease = st.TTL()
		}
	}
	storage := jetstream.FileStorage
	if c.cfg.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	return c.ensureBucket(ctx, leaderBucketConfig(c.space, c.leaderLease, storage), "leader bucket")
}
