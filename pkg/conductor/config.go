package conductor

import (
	"cmp"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/pkg/client"
)

// Config configures a Conductor. The zero value of each field is replaced by
// the default its comment names.
type Config struct {
	// DataDir holds the embedded server's JetStream store, and, with or
	// without it, conductord's archive of final states
	// (DataDir/archive/<namespace>). Default "./data".
	DataDir string
	// NATSListen is the embedded server's client listener, HOST:PORT; port 0
	// picks a free port. Default "127.0.0.1:4222". Ignored with NATSURL.
	NATSListen string
	// NATSURL, when set, connects to an existing NATS server or cluster
	// (JetStream enabled) instead of embedding one: a URL, or several
	// separated by commas (the servers of a cluster; the client also
	// learns the others from the one it reaches).
	NATSURL string
	// NATSTLSCA, NATSTLSCert and NATSTLSKey (PEM files) are what the
	// connection to NATSURL checks the servers against (default: the
	// system's roots, for a tls:// URL) and the client certificate it
	// presents (mutual TLS); NATSCreds a NATS credentials file (a user
	// JWT and its seed) it authenticates with, instead of or besides
	// Token. With NATSURL only (docs/deployment.md).
	NATSTLSCA, NATSTLSCert, NATSTLSKey string
	NATSCreds                          string
	// Replicas is the replica count of every stream and key-value bucket
	// the conductor makes, 1 to MaxReplicas; a stream or bucket that
	// exists is updated to it at start (docs/deployment.md). 0, the
	// default: 1 on the embedded server alone; on an embedded cluster
	// (ClusterListen), 3, or the cluster's size if smaller; with NATSURL,
	// 3 if the server can place them (a JetStream cluster with 3 servers
	// up), else 1. Above 1 it needs NATSURL or ClusterListen; a count the
	// server cannot place fails Start with ErrReplicas.
	Replicas int
	// LeaderLease is how long the lease of the conductords' leader lasts
	// past its last renewal (docs/deployment.md, "Two conductords"): a
	// leader killed is replaced about a lease and a third later, one
	// stopped within a third of a lease. Every conductord of a namespace
	// must have the same. Default DefaultLeaderLease; MinLeaderLease to
	// MaxLeaderLease.
	LeaderLease time.Duration
	// The embedded cluster (docs/deployment.md, "Embedded cluster"):
	// conductords on several machines, each embedding a NATS server, routed
	// into one JetStream cluster. Embedded server only: New refuses them
	// with NATSURL.
	//
	// ClusterListen, when set, is the embedded server's route listener,
	// HOST:PORT, the one the other nodes' ClusterRoutes name. Empty (the
	// default): no cluster, the server is alone.
	ClusterListen string
	// ClusterRoutes are the route URLs of the cluster's nodes,
	// nats-route://HOST:PORT each; this node's own may be among them (give
	// every node the same list). At least one with ClusterListen. Their
	// count, with this node if its own is not among them, is the cluster's
	// size, which sets the default of Replicas.
	ClusterRoutes []string
	// ClusterName names the cluster; every node must give the same.
	// Default "conductor".
	ClusterName string
	// ServerName is this node's name in the cluster, unique in it
	// (JetStream's peers are told apart by it). Default: the hostname.
	ServerName string
	// ClusterSecret is the secret every route presents and every node
	// requires of one (the same on every node): no server without it can
	// join the cluster and read its streams. Required when ClusterListen
	// is not on a loopback address, unless Insecure.
	ClusterSecret string
	// ClusterTLSCA (a PEM file) is the issuer of the nodes' certificates:
	// with TLSCert, the routes speak TLS, each node presenting TLSCert both
	// ways and requiring of the other a certificate ClusterTLSCA signed
	// (default TLSCA, else the system's roots). Needs TLSCert.
	ClusterTLSCA string
	// ClusterWait bounds how long Start waits for the cluster: for its
	// JetStream meta leader (a quorum of its nodes up) and for enough
	// nodes to place the streams' replicas. Start's context bounds it
	// too. Default 5m.
	ClusterWait time.Duration
	// nodes is the cluster's size, counted from ClusterRoutes by
	// checkCluster (the routes' names are resolved once).
	nodes int
	// HTTPListen is the HTTP API's listener, HOST:PORT. Empty: no HTTP API.
	HTTPListen string
	// HTTPHosts are names the HTTP API answers to besides its own: a
	// request whose Host is none of them, nor localhost, 127.0.0.1, ::1,
	// the machine's hostname, HTTPListen's host (or, when that is a
	// wildcard, any IP address), is refused with 421, so that DNS
	// rebinding cannot reach the API (docs/security.md). Default: none.
	HTTPHosts []string
	// MaxBatchBytes bounds the body of POST /v1/batches/{type}, in bytes:
	// a larger one is refused with 413 while it is read, and nothing is
	// queued. Default 64 MiB.
	MaxBatchBytes int64
	// MaxPoolSize bounds the count of a pool resize sent through the
	// HTTP API: a larger one is refused with 400. Default 1000.
	MaxPoolSize int
	// MaxJobTypes bounds the job types conductord queues jobs of (by HTTP
	// or by NATS request): a job of a new type past it is refused with 400.
	// Each type costs the job stream and the stats bucket for good.
	// Default 10,000.
	MaxJobTypes int
	// MaxEventStreams bounds the GET /v1/events and GET
	// /v1/pools/{name}/logs streams served at once, together,
	// MaxBatchReads the POST /v1/batches bodies read at once (each up to
	// MaxBatchBytes), and MaxHTTPConns the HTTP connections open at once:
	// past the first two, 503; past the last, a new connection waits for
	// one to close. Defaults 256, 4 and 4096.
	MaxEventStreams int
	MaxBatchReads   int
	MaxHTTPConns    int
	// EventBuffer bounds, in bytes, the events GET /v1/events (or the
	// lines GET /v1/pools/{name}/logs?follow=true) holds for one client
	// that has not taken them yet; EventWriteTimeout bounds
	// how long one write to it may block. A client past either is cut off
	// (and logged); the others are not held back. Defaults 1 MiB and 10s.
	EventBuffer       int
	EventWriteTimeout time.Duration
	// MaxConsoleStreams bounds the GET /v1/console/stream streams served
	// at once (503 past it, as MaxEventStreams); each holds the newest
	// snapshot only for its client, and is cut off past EventWriteTimeout
	// as an event stream is. Default 16.
	MaxConsoleStreams int
	// Namespace isolates conductors sharing one NATS. Default "default".
	Namespace string
	// Token, when set, is required from NATS clients and HTTP callers
	// that present no credential, and gives them every power (the admin
	// role). A conductor with credentials needs none.
	Token string
	// Credentials is the file of the credentials conductord accepts, each
	// with a role (docs/security.md, "Roles and credentials"): written by
	// `conductord creds`, read at start and again within CredentialsCheck
	// of a change. With a credential or a Token, every NATS client and HTTP
	// caller must present one; with neither, the conductor is open to
	// whoever reaches it, and listens on loopback only (see Insecure).
	// Default DataDir/credentials.json.
	Credentials string
	// NamespaceMaxBytes and NamespaceMaxMemory bound what the account of
	// another namespace (a credential's Namespace) may store in the
	// embedded server's JetStream, on disk and in memory;
	// NamespaceMaxStreams and NamespaceMaxConsumers its streams and
	// consumers: its admin is trusted with its namespace, not with the
	// server. Defaults 10 GiB, 256 MiB, 32 and 10,000.
	NamespaceMaxBytes     int64
	NamespaceMaxMemory    int64
	NamespaceMaxStreams   int
	NamespaceMaxConsumers int
	// TLSCert and TLSKey, PEM files, make the embedded NATS server and the
	// HTTP API speak TLS only (HTTPS), with this certificate. TLSCA and
	// TLSVerify make the NATS server require of every client a certificate
	// signed by TLSCA (mutual TLS), besides its token or credential.
	// conductord's own connection is in the process, and needs none.
	TLSCert, TLSKey, TLSCA string
	TLSVerify              bool
	// CredentialsCheck is how often the credentials file is looked at for
	// a change. Default 1s.
	CredentialsCheck time.Duration
	// MemoryStorage keeps streams in memory instead of files: faster, and
	// lost with the process. For tests, benchmarks and throwaway batches.
	MemoryStorage bool
	// Sync is when the embedded server fsyncs its store: SyncInterval (the
	// default: every SyncInterval) or SyncAlways (after every write). An
	// acknowledged write is in the file either way, and survives a crash
	// of conductord; what the power-loss window is, is the choice made
	// here (docs/reliability.md, "Power loss and sync"). It applies to the
	// embedded server only: set with NATSURL or MemoryStorage, New
	// refuses it.
	Sync Sync
	// SyncInterval is how often the store is fsynced with SyncInterval.
	// Default 2m, JetStream's own default. Refused with SyncAlways, NATSURL
	// or MemoryStorage.
	SyncInterval time.Duration
	// StorageReserve is the room, in bytes, kept free on DataDir's
	// filesystem besides what draining the jobs queued will write (their
	// final states, job ends and archive, which the storage guard keeps
	// room for too); a quarter of it, at most 16 MiB, is held in a ballast
	// file, given back if a store meets a full disk. New jobs are refused,
	// and /healthz answers 503, while there is no room for them and their
	// drain (docs/reliability.md, "Storage"). Default: 1/16 of the
	// filesystem, within 16 MiB and 1 GiB. Embedded file store only.
	StorageReserve int64
	// StorageCheck is how often the free space and the store are checked.
	// Default 1s.
	StorageCheck time.Duration
	// StrayCheck is how often the job stream is searched for stray
	// messages, which no consumer will deliver (a crash of the server can
	// leave them; docs/reliability.md, "Delivery"); it is also searched at
	// start. Default 30s.
	StrayCheck time.Duration
	// ConsumerIdle is how long a job type goes unserved (no live host,
	// nor one lost lately, has a pool of it) before its consumers on the
	// job stream are removed; its jobs stay queued (docs/architecture.md,
	// "Consumers"). Default 1h, at least MinConsumerIdle.
	ConsumerIdle time.Duration
	// Retention is how long a job's state is kept after its last change.
	// Default 72h.
	Retention time.Duration
	// ArchiveAfter is how long a final job state stays in the state
	// bucket once written; then only conductord's archive (DataDir/archive)
	// keeps it, for the rest of Retention. The server holds about 130
	// bytes of memory per state in the bucket, so this bounds its memory
	// by the jobs that end in ArchiveAfter, not in Retention. Default 1h.
	// With MemoryStorage there is no archive: final states stay in the
	// bucket for Retention.
	ArchiveAfter time.Duration
	// ArchiveMaxStates and ArchiveMaxBytes, if not 0, bound the archive
	// by count and size as well as by Retention: the oldest states go
	// first, a segment (up to 100,000 states) at a time.
	ArchiveMaxStates int
	ArchiveMaxBytes  int64
	// Lookups seeds the named lookups (lookup name -> key -> any value
	// that encodes to JSON), and LookupsFile from a JSON file of the same
	// shape: each key is set at start if the lookups do not hold it yet,
	// so that what was set since (by workers, by hand) stays
	// (docs/lookups.md).
	Lookups     map[string]map[string]any
	LookupsFile string
	// Handlers answer the workers' requests (the channel's request op,
	// Job.Request in the Go SDK), by command: okanjo's
	// sendRequestToMaster. Any NATS responder on the command's subject
	// may answer too (docs/messages.md); a command no one answers is
	// answered an error, at once.
	Handlers map[string]RequestHandler
	// StatsInterval is how often the workers' counters are rolled up
	// (docs/stats.md; GET /v1/stats). Default 5s.
	StatsInterval time.Duration
	// OnStats, if set, gets each roll-up of the workers' counters, on the
	// roller's goroutine: it must not block.
	OnStats func(*Stats)
	// DedupWindow is how long a Nats-Msg-Id header deduplicates a job
	// published on NATS. Default 2m.
	DedupWindow time.Duration
	// MaxPayload bounds a job's payload, in bytes. Default 64 MiB
	// (client.DefaultMaxPayload), at most MaxPayloadLimit.
	MaxPayload int
	// InlinePayload is the largest payload that travels in its job's
	// message; a larger one is stored in the payload bucket and the
	// message carries its reference (docs/protocol.md, "Large payloads").
	// Default 1 MiB (client.DefaultInlinePayload), within the NATS
	// server's max_payload less 8 KiB for the headers.
	InlinePayload int
	// Insecure lets the conductor listen beyond this machine (NATSListen
	// or HTTPListen not on a loopback address) with no Token; without it,
	// New refuses to.
	Insecure bool
	// inProcess keeps the embedded server off the network: only
	// connections made in the process (connectInProcess) reach it.
	// RunBatch's.
	inProcess bool
	// Logger receives the conductor's logs. Default: discard.
	Logger *slog.Logger
	// Metrics, if set, is served at GET /metrics, behind the token
	// (conductord serves internal/metrics there). Nil: no /metrics.
	Metrics http.Handler
}

func (c Config) withDefaults() Config {
	c.DataDir = cmp.Or(c.DataDir, "./data")
	c.Credentials = cmp.Or(c.Credentials, filepath.Join(c.DataDir, auth.FileName))
	c.CredentialsCheck = cmp.Or(c.CredentialsCheck, time.Second)
	c.NATSListen = cmp.Or(c.NATSListen, "127.0.0.1:4222")
	c.Namespace = cmp.Or(c.Namespace, "default")
	c.Retention = cmp.Or(c.Retention, 72*time.Hour)
	c.ArchiveAfter = cmp.Or(c.ArchiveAfter, time.Hour)
	c.DedupWindow = cmp.Or(c.DedupWindow, 2*time.Minute)
	c.MaxPayload = cmp.Or(c.MaxPayload, client.DefaultMaxPayload)
	c.InlinePayload = cmp.Or(c.InlinePayload, min(client.DefaultInlinePayload, c.MaxPayload))
	c.StrayCheck = cmp.Or(c.StrayCheck, 30*time.Second)
	c.ConsumerIdle = cmp.Or(c.ConsumerIdle, DefaultConsumerIdle)
	c.LeaderLease = cmp.Or(c.LeaderLease, DefaultLeaderLease)
	c.MaxBatchBytes = cmp.Or(c.MaxBatchBytes, 64<<20)
	c.MaxPoolSize = cmp.Or(c.MaxPoolSize, DefaultMaxPoolSize)
	c.EventBuffer = cmp.Or(c.EventBuffer, 1<<20)
	c.MaxEventStreams = cmp.Or(c.MaxEventStreams, 256)
	c.MaxConsoleStreams = cmp.Or(c.MaxConsoleStreams, 16)
	c.StatsInterval = cmp.Or(c.StatsInterval, 5*time.Second)
	c.MaxJobTypes = cmp.Or(c.MaxJobTypes, 10_000)
	c.NamespaceMaxBytes = cmp.Or(c.NamespaceMaxBytes, 10<<30)
	c.NamespaceMaxMemory = cmp.Or(c.NamespaceMaxMemory, 256<<20)
	c.NamespaceMaxStreams = cmp.Or(c.NamespaceMaxStreams, 32)
	c.NamespaceMaxConsumers = cmp.Or(c.NamespaceMaxConsumers, 10_000)
	c.MaxBatchReads = cmp.Or(c.MaxBatchReads, 4)
	c.MaxHTTPConns = cmp.Or(c.MaxHTTPConns, 4096)
	c.EventWriteTimeout = cmp.Or(c.EventWriteTimeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
