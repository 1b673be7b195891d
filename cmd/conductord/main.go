// Command conductord is the conductor daemon: an embedded NATS server with
// JetStream (or a connection to an existing one), the job stream and states,
// and the HTTP API and dashboard. See docs/architecture.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/conductor-run/conductor/internal/cmdline"
	"github.com/conductor-run/conductor/internal/logflags"
	"github.com/conductor-run/conductor/internal/metrics"
	"github.com/conductor-run/conductor/internal/names"
	_ "github.com/conductor-run/conductor/internal/profiling" // pprof in -tags pprof builds
	"github.com/conductor-run/conductor/internal/secret"
	"github.com/conductor-run/conductor/internal/version"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/conductor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	run := run
	if len(os.Args) > 1 && os.Args[1] == "creds" {
		run = func(_ context.Context, args []string, stdout, stderr io.Writer) error {
			return creds(args[1:], stdout, stderr)
		}
	}
	code := cmdline.ExitCode("conductord", run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("conductord", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg conductor.Config
	fs.StringVar(&cfg.DataDir, "data", "./data", "directory of the JetStream store and state")
	fs.StringVar(&cfg.NATSListen, "nats", "127.0.0.1:4222", "embedded NATS server's client listener, HOST:PORT (port 0: any free port)")
	fs.StringVar(&cfg.NATSURL, "nats-url", "", "use this existing NATS server or cluster instead of embedding one (several URLs: comma-separated)")
	fs.StringVar(&cfg.NATSTLSCA, "nats-tls-ca", "", "with --nats-url: PEM file of the issuer of the NATS servers' certificates (default: the system's roots, for tls:// URLs)")
	fs.StringVar(&cfg.NATSTLSCert, "nats-tls-cert", "", "with --nats-url: PEM file of the client certificate to present to the NATS servers (with --nats-tls-key)")
	fs.StringVar(&cfg.NATSTLSKey, "nats-tls-key", "", "with --nats-url: PEM file of the key of --nats-tls-cert")
	fs.StringVar(&cfg.NATSCreds, "nats-creds", "", "with --nats-url: a NATS credentials file (user JWT and seed) to authenticate with")
	fs.IntVar(&cfg.Replicas, "replicas", 0, "replicas of every stream and bucket, 1 to 5 (0: 1 embedded; with --nats-url, 3 where the cluster can place them, else 1)")
	fs.DurationVar(&cfg.LeaderLease, "leader-lease", conductor.DefaultLeaderLease, "the lease of the leader among the conductords of one namespace: a killed leader is replaced about this and a third later (the same on every conductord)")
	fs.StringVar(&cfg.ClusterListen, "cluster", "", "make the embedded server a node of a cluster of conductords: its route listener, HOST:PORT (docs/deployment.md, \"Embedded cluster\")")
	fs.Func("cluster-routes", "with --cluster: the cluster's nodes, nats-route://HOST:PORT comma-separated (this node's may be among them; give every node the same list); repeatable", func(v string) error {
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				cfg.ClusterRoutes = append(cfg.ClusterRoutes, r)
			}
		}
		return nil
	})
	fs.StringVar(&cfg.ClusterName, "cluster-name", "", "with --cluster: the cluster's name, the same on every node (default conductor)")
	fs.StringVar(&cfg.ServerName, "server-name", "", "this node's name, unique in its cluster (default: the hostname)")
	clusterSecret := fs.String("cluster-secret-file", "", "with --cluster: a file holding the secret every route presents and requires, the same on every node (chmod 600); required unless --cluster is on 127.0.0.1 or --insecure")
	fs.StringVar(&cfg.ClusterTLSCA, "cluster-tls-ca", "", "with --cluster and --tls-cert: PEM file of the issuer of the nodes' certificates; the routes then speak TLS, each node presenting --tls-cert both ways (default --tls-ca, else the system's roots)")
	fs.DurationVar(&cfg.ClusterWait, "cluster-wait", 0, "with --cluster: how long start waits for a quorum of the nodes and for enough of them to place the replicas (0: 5m)")
	fs.StringVar(&cfg.HTTPListen, "http", "127.0.0.1:7070", "HTTP API, dashboard and /metrics listener, HOST:PORT")
	fs.StringVar(&cfg.Namespace, "namespace", "default", "isolates conductors sharing one NATS")
	fs.StringVar(&cfg.Token, "token", os.Getenv(names.EnvToken), "a shared token with every power (admin), besides the credentials (env CONDUCTOR_TOKEN)")
	fs.StringVar(&cfg.Credentials, "credentials", "", "the credentials file, written by `conductord creds` (default --data/credentials.json)")
	fs.DurationVar(&cfg.Retention, "retention", 72*time.Hour, "how long a job's state is kept after its last change")
	fs.DurationVar(&cfg.ArchiveAfter, "archive-after", time.Hour, "how long a final job state stays in the state bucket before only the archive (--data/archive) keeps it; the server holds ~130 bytes per state in the bucket")
	fs.IntVar(&cfg.ArchiveMaxStates, "archive-max-states", 0, "the most final states the archive keeps, oldest dropped first (0: no limit but --retention)")
	fs.Int64Var(&cfg.ArchiveMaxBytes, "archive-max-bytes", 0, "the most bytes the archive keeps, oldest dropped first (0: no limit but --retention)")
	fs.IntVar(&cfg.MaxPayload, "max-payload", client.DefaultMaxPayload, "the largest job payload taken, in bytes (at most 256 MiB); one over --inline-payload is stored in the payload bucket and passed by reference")
	fs.IntVar(&cfg.InlinePayload, "inline-payload", client.DefaultInlinePayload, "the largest job payload that travels in its job's message, in bytes (within the NATS server's max_payload less 8 KiB, and by default within --max-payload); a larger one is passed by reference")
	fs.DurationVar(&cfg.ConsumerIdle, "consumer-idle", conductor.DefaultConsumerIdle, "how long a job type goes unserved by any host before its consumers on the job stream are removed (its jobs stay queued; at least 5m)")
	fs.DurationVar(&cfg.StatsInterval, "stats-interval", 5*time.Second, "how often the workers' counters are rolled up (GET /v1/stats; docs/stats.md)")
	fs.StringVar(&cfg.LookupsFile, "lookups-file", "", "a JSON file of named lookups, {\"name\": {\"key\": value}}: each key is set at start unless the lookups hold it already (docs/lookups.md)")
	fs.BoolVar(&cfg.MemoryStorage, "memory", false, "keep jobs in memory only: faster, lost on exit")
	fs.Int64Var(&cfg.StorageReserve, "storage-reserve", 0, "bytes kept free on --data besides what draining the queued jobs writes; new jobs are refused when they and their drain do not fit (0: 1/16 of the filesystem, within 16 MiB and 1 GiB)")
	syncMode := fs.String("sync", string(conductor.SyncInterval), "when the embedded store is fsynced: interval (every --sync-interval) or always (after every write)")
	syncEvery := fs.Duration("sync-interval", conductor.DefaultSyncInterval, "how often the embedded store is fsynced with --sync interval")
	fs.Func("http-host", "a name the HTTP API answers to besides localhost, 127.0.0.1, ::1, the hostname and --http's host (any IP address when --http is a wildcard); requests to any other Host are refused (repeatable)", func(name string) error {
		cfg.HTTPHosts = append(cfg.HTTPHosts, name)
		return nil
	})
	fs.Int64Var(&cfg.MaxBatchBytes, "max-batch-bytes", 64<<20, "largest body of POST /v1/batches/{type}, in bytes (413 above it)")
	fs.IntVar(&cfg.MaxPoolSize, "max-pool-size", conductor.DefaultMaxPoolSize, "largest count of a pool resize through the HTTP API (400 above it)")
	fs.IntVar(&cfg.MaxJobTypes, "max-job-types", 10_000, "the most job types conductord queues jobs of; a new type past it is refused (400)")
	fs.IntVar(&cfg.MaxEventStreams, "max-event-streams", 256, "the most GET /v1/events streams served at once (503 past it)")
	fs.IntVar(&cfg.MaxConsoleStreams, "max-console-streams", 16, "the most GET /v1/console/stream streams (the console's live feed) served at once (503 past it)")
	fs.IntVar(&cfg.MaxBatchReads, "max-batch-reads", 4, "the most POST /v1/batches bodies read at once (503 past it)")
	fs.IntVar(&cfg.MaxHTTPConns, "max-http-conns", 4096, "the most HTTP connections open at once; past it a new one waits")
	fs.Int64Var(&cfg.NamespaceMaxBytes, "namespace-max-bytes", 10<<30, "the most another namespace (a credential's --namespace) may store in the embedded JetStream")
	fs.Int64Var(&cfg.NamespaceMaxMemory, "namespace-max-memory", 256<<20, "the most memory another namespace's streams may hold in the embedded JetStream")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM file of the certificate NATS and the HTTP API serve, TLS only (with --tls-key)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM file of the key of --tls-cert")
	fs.StringVar(&cfg.TLSCA, "tls-ca", "", "PEM file of the issuer of the client certificates --tls-verify requires")
	fs.BoolVar(&cfg.TLSVerify, "tls-verify", false, "require of every NATS client a certificate signed by --tls-ca (mutual TLS)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "listen beyond this machine (--nats or --http not on 127.0.0.1) with no token, or take routes (--cluster) beyond it with no --cluster-secret-file; refused without it")
	tokenFile := fs.String("token-file", "", "a file holding the token, read once at start (chmod 600); instead of --token and CONDUCTOR_TOKEN")
	stallAfter := fs.Duration("stall-after", metrics.DefaultStallAfter, "how long a job type may have jobs queued and none ended before the metric conductor_queue_stalled says 1 (docs/metrics.md)")
	logs := logflags.Register(fs)
	showVersion := fs.Bool("version", false, "print conductord's version and exit")
	if err := fs.Parse(args); err != nil {
		return cmdline.UsageError{Err: err}
	}
	if *showVersion {
		_, err := fmt.Fprintln(stdout, "conductord", version.Get())
		return err
	}
	tokenShared := false
	if *tokenFile != "" {
		if flagGiven(fs, "token") {
			return errors.New("give --token or --token-file, not both")
		}
		var err error
		if cfg.Token, tokenShared, err = secret.ReadTokenFile(*tokenFile); err != nil {
			return err
		}
	}
	secretShared := false
	if *clusterSecret != "" {
		var err error
		if cfg.ClusterSecret, secretShared, err = secret.ReadTokenFile(*clusterSecret); err != nil {
			return fmt.Errorf("--cluster-secret-file: %w", err)
		}
	}
	if fs.NArg() > 0 {
		return cmdline.Usage(fs, fmt.Errorf("unexpected argument %q", fs.Arg(0)))
	}
	if !flagGiven(fs, "inline-payload") {
		// Its default, within a lower --max-payload (the limit of before
		// large payloads was 1 MiB, and deployments lowered it).
		cfg.InlinePayload = min(cfg.InlinePayload, cfg.MaxPayload)
	}
	if err := syncFlags(fs, &cfg, *syncMode, *syncEvery); err != nil {
		return cmdline.Usage(fs, err)
	}
	if *stallAfter <= 0 {
		return cmdline.Usage(fs, fmt.Errorf("bad --stall-after %s: want a positive duration such as 5m", *stallAfter))
	}
	var err error
	if cfg.Logger, err = logs.Logger(stderr); err != nil {
		return cmdline.Usage(fs, err)
	}
	if tokenShared {
		cfg.Logger.Warn("the token file may be read by other users of this host: chmod 600 it", "file", *tokenFile)
	}
	if secretShared {
		cfg.Logger.Warn("the cluster secret file may be read by other users of this host: chmod 600 it", "file", *clusterSecret)
	}
	if flagGiven(fs, "token") {
		cfg.Logger.Warn("--token on the command line is visible to every local user in the process list; use --token-file or " + names.EnvToken)
	}

	var c *conductor.Conductor // read by the metrics handler at scrape time only
	// Only the embedded file store of a server alone is watched.
	src := metrics.ConductorSource(&c, cfg.NATSURL == "" && !cfg.MemoryStorage && cfg.ClusterListen == "")
	src.StallAfter = *stallAfter
	cfg.Metrics = metrics.Handler(src)
	c, err = conductor.New(cfg)
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	cfg.Logger.Info("conductord ready", "nats", c.NATSURL(), "http", c.HTTPAddr(), "namespace", cfg.Namespace)
	<-ctx.Done()
	cfg.Logger.Info("conductord stopping")
	c.Stop()
	return nil
}

// syncFlags puts --sync and --sync-interval into cfg, if given: their
// defaults are the Config's, and New refuses them where they cannot apply.
func syncFlags(fs *flag.FlagSet, cfg *conductor.Config, mode string, every time.Duration) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch {
		case err != nil:
		case f.Name == "sync":
			if cfg.Sync, err = conductor.ParseSync(mode); err != nil {
				err = fmt.Errorf("--sync: %w", err)
			}
		case f.Name == "sync-interval" && every <= 0:
			err = fmt.Errorf("bad --sync-interval %s: want a positive duration such as 2m", every)
		case f.Name == "sync-interval":
			cfg.SyncInterval = every
		}
	})
	return err
}

// flagGiven reports whether the command line set the flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}
