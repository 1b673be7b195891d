package conductor

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/tlsconf"
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
	// (JetStream enabled) instead of embedding one.
	NATSURL string
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
	// MaxEventStreams bounds the GET /v1/events streams served at once,
	// MaxBatchReads the POST /v1/batches bodies read at once (each up to
	// MaxBatchBytes), and MaxHTTPConns the HTTP connections open at once:
	// past the first two, 503; past the last, a new connection waits for
	// one to close. Defaults 256, 4 and 4096.
	MaxEventStreams int
	MaxBatchReads   int
	MaxHTTPConns    int
	// EventBuffer bounds, in bytes, the events GET /v1/events holds for
	// one client that has not taken them yet; EventWriteTimeout bounds
	// how long one write to it may block. A client past either is cut off
	// (and logged); the others are not held back. Defaults 1 MiB and 10s.
	EventBuffer       int
	EventWriteTimeout time.Duration
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
	// DedupWindow is how long a Nats-Msg-Id header deduplicates a job
	// published on NATS. Default 2m.
	DedupWindow time.Duration
	// MaxPayload bounds a job's payload, in bytes. Default 1 MiB.
	MaxPayload int
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
	c.MaxPayload = cmp.Or(c.MaxPayload, 1<<20)
	c.StrayCheck = cmp.Or(c.StrayCheck, 30*time.Second)
	c.MaxBatchBytes = cmp.Or(c.MaxBatchBytes, 64<<20)
	c.MaxPoolSize = cmp.Or(c.MaxPoolSize, DefaultMaxPoolSize)
	c.EventBuffer = cmp.Or(c.EventBuffer, 1<<20)
	c.MaxEventStreams = cmp.Or(c.MaxEventStreams, 256)
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

// Conductor is the hub: it holds (or connects to) the NATS server, owns the
// job stream and the state buckets, aggregates job counts and host
// heartbeats, and serves the HTTP API. Build it with New; it is what
// conductord runs.
type Conductor struct {
	cfg    Config
	space  subject.Space
	log    *slog.Logger
	access *access     // who may connect, and with what role
	tls    *tls.Config // the NATS server's and the HTTP API's; nil: no TLS

	ns       *server.Server // nil with NATSURL
	nc       *nats.Conn
	ncClosed chan struct{} // closed by nc's closed handler
	js       jetstream.JetStream
	client   *client.Client
	batches  jetstream.KeyValue // the batch bucket
	subs     []*nats.Subscription

	// closing ends when the conductor begins to stop, and with it the
	// event streams and the waits of the submissions.
	closing    context.Context
	beginClose context.CancelFunc

	// life is the lifecycle (startstop): Start's context, cancelled by
	// Stop, bounds the conductor's run. A Conductor runs once.
	life startstop.Base

	// wg counts the NATS submissions in flight, each on a goroutine of
	// its own. submitMu orders the start of closing with them: one starts
	// its goroutine in wg only before closing, so that none starts after
	// shutdown began waiting for wg, and none queues a job it could not
	// answer for.
	wg       sync.WaitGroup
	submitMu sync.Mutex

	// The background parts, each a startstop.Service owning its goroutine
	// and state: started in this order once NATS is up, stopped by
	// shutdown in the order it writes down.
	ends      *endsTaker        // takes the job ends: counts, batch ends, waits
	archive   *archiver         // keeps the final states past ArchiveAfter; nil with MemoryStorage
	stats     *stats            // the job counts, saved by the ends taker; no goroutine
	batchEnds *batchEnds        // announces the end of each batch
	storage   *storageGuard     // keeps the store writable; nil without an embedded file store
	strays    *strayRepair      // repairs the job messages no consumer will deliver
	http      *httpServer       // the HTTP API; nil without Config.HTTPListen
	watch     startstop.Service // reads the credentials file again when it changes
	types     *jobTypes         // the job types queued, bounded

	// onEnds, if set, is called once jobEnds has handled a message, with
	// the ids of the jobs whose end it passed to the client: a test
	// signal, set between New and Start; nil in production.
	onEnds func(ended []string)
	// ackEnds, if set, acks an ends message whose counts are saved, in
	// place of its DoubleAck: a test signal, set between New and Start;
	// nil in production. It is called from the ends taker's acker, up to
	// endsAcksInFlight at once.
	ackEnds func(ctx context.Context, m jetstream.Msg) error
	// batchStall, if set (by tests, before Start), replaces
	// client.BatchStall.
	batchStall time.Duration
	// onStrayPass, if set, is called after each pass of the stray
	// repair: a test signal, set between New and Start; nil in production.
	onStrayPass func(strayPass)
	// onEventsCut, if set, is called when an event stream is cut off
	// for a client that does not read, with the reason and the bytes
	// queued for it: a test signal, set between New and Start; nil in
	// production.
	onEventsCut func(reason string, buffered int)
}

var _ startstop.Service = (*Conductor)(nil)

// New checks cfg and returns a Conductor ready to Start.
func New(cfg Config) (*Conductor, error) {
	cfg = cfg.withDefaults()
	space, err := subject.New(cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	if cfg.NATSURL == "" {
		if _, _, err := splitHostPort(cfg.NATSListen); err != nil {
			return nil, fmt.Errorf("conductor: nats listen address: %w", err)
		}
	}
	if err := cfg.checkSync(); err != nil {
		return nil, err
	}
	access, err := newAccess(space, cfg.Credentials, cfg.Token, cfg.Logger.With("component", "access"))
	if err != nil {
		return nil, err
	}
	access.nsLimits = server.JetStreamAccountLimits{
		MaxMemory: cfg.NamespaceMaxMemory, MaxStore: cfg.NamespaceMaxBytes,
		MaxStreams: cfg.NamespaceMaxStreams, MaxConsumers: cfg.NamespaceMaxConsumers,
		MaxAckPending: -1, MemoryMaxStreamBytes: -1, StoreMaxStreamBytes: -1,
	}
	if err := cfg.checkExposure(access.open()); err != nil {
		return nil, err
	}
	if cfg.StorageReserve < 0 {
		return nil, fmt.Errorf("conductor: bad storage reserve %d: want a number of bytes, or 0 for the default", cfg.StorageReserve)
	}
	switch {
	case cfg.DedupWindow < 2*client.RepublishWithin:
		return nil, fmt.Errorf("conductor: bad dedup window %s: want %s or more, so that a submission repeated after a cut is one job", cfg.DedupWindow, 2*client.RepublishWithin)
	case cfg.ArchiveAfter < time.Second:
		return nil, fmt.Errorf("conductor: bad archive-after %s: want 1s or more (a state's time to live is counted in seconds)", cfg.ArchiveAfter)
	case cfg.ArchiveMaxStates < 0 || cfg.ArchiveMaxBytes < 0:
		return nil, fmt.Errorf("conductor: bad archive bounds %d states, %d bytes: want 0 (none) or more", cfg.ArchiveMaxStates, cfg.ArchiveMaxBytes)
	}
	if cfg.StorageCheck < 0 {
		return nil, fmt.Errorf("conductor: bad storage check interval %s: want a positive duration, or 0 for the default", cfg.StorageCheck)
	}
	if cfg.StrayCheck < 0 {
		return nil, fmt.Errorf("conductor: bad stray check interval %s: want a positive duration, or 0 for the default", cfg.StrayCheck)
	}
	if err := cfg.checkHTTP(); err != nil {
		return nil, err
	}
	tlsConfig, err := tlsconf.Server(tlsconf.Files{Cert: cfg.TLSCert, Key: cfg.TLSKey, CA: cfg.TLSCA}, cfg.TLSVerify)
	if err != nil {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	closing, beginClose := context.WithCancel(context.Background())
	return &Conductor{
		cfg: cfg, space: space, log: cfg.Logger, access: access, tls: tlsConfig,
		closing: closing, beginClose: beginClose, ncClosed: make(chan struct{}),
	}, nil
}

// Start starts the embedded NATS server (or connects to NATSURL), creates
// the job stream and state buckets if they do not exist, and starts the
// HTTP API; it returns once all run. The conductor then runs until ctx is
// cancelled or Stop is called, and stops as Stop says. On error everything
// started is stopped again. A second Start while the conductor runs does
// nothing; a Conductor runs once: Start after it stopped returns an error.
func (c *Conductor) Start(ctx context.Context) error {
	ctx, ok, done, err := c.life.StartInitOnce(ctx)
	if err != nil {
		return errors.New("conductor: stopped; a Conductor runs once")
	}
	if !ok {
		return nil
	}
	if err := c.start(ctx); err != nil {
		c.shutdown()
		done()
		return err
	}
	go func() {
		defer done()
		<-ctx.Done()
		c.shutdown()
	}()
	return nil
}

func (c *Conductor) start(ctx context.Context) error {
	opts := []nats.Option{
		nats.Name("conductord"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ClosedHandler(func(*nats.Conn) { close(c.ncClosed) }),
	}
	url := c.cfg.NATSURL
	if url == "" {
		if err := c.startServer(); err != nil {
			return err
		}
		// In the process: no socket, so no TLS either (tls:// would ask
		// for it).
		url = strings.Replace(c.ns.ClientURL(), "tls://", "nats://", 1)
		opts = append(opts, nats.InProcessServer(c.ns), nats.Token(c.access.internal))
	} else if c.cfg.Token != "" {
		opts = append(opts, client.WithToken(c.cfg.Token))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("conductor: connect to NATS: %w", err)
	}
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("conductor: %w", err)
	}
	if err := c.ensureStreams(ctx); err != nil {
		return err
	}
	if err := c.prepareStorage(ctx); err != nil {
		return err
	}
	if c.types, err = c.loadJobTypes(ctx); err != nil {
		return err
	}
	// The client takes the job ends from jobEnds, not from the job events,
	// and listens to the heartbeats from now on, for the dashboard.
	if c.client, err = client.New(nc, client.Config{
		Namespace: c.cfg.Namespace, MaxPayload: c.cfg.MaxPayload, FeedEnds: true, ListenHosts: true,
		Logger: c.log.With("component", "hosts"),
	}); err != nil {
		return err
	}
	batches, err := c.js.KeyValue(ctx, c.space.BatchBucket())
	if err != nil {
		return fmt.Errorf("conductor: open the batch bucket: %w", err)
	}
	c.batchEnds = newBatchEnds(batches, c.client, c.nc, c.space, c.log, cmp.Or(c.batchStall, client.BatchStall))
	if c.stats, err = newStats(ctx, c.js, c.space, c.log); err != nil {
		return err
	}
	if c.archiving() {
		if c.archive, err = newArchiver(c); err != nil {
			return fmt.Errorf("conductor: open the archive: %w", err)
		}
	}
	if err := c.serveArchive(); err != nil {
		return err
	}
	if c.strays, err = newStrayRepair(ctx, c); err != nil {
		return err
	}
	if c.ends, err = newEndsTaker(ctx, c); err != nil {
		return err
	}
	if err := c.serveSubmits(c.closing); err != nil {
		return err
	}
	if err := c.serveJobReads(); err != nil {
		return err
	}
	// Start returns once the server has the subscriptions: a submission
	// by request right after it is answered, not refused for no responder.
	if err := c.nc.Flush(); err != nil {
		return fmt.Errorf("conductor: subscribe: %w", err)
	}
	c.watch = c.access.watch(c.cfg.CredentialsCheck)
	if c.cfg.HTTPListen != "" {
		c.http = newHTTPServer(c.cfg.HTTPListen, c.Handler(), c.tls, c.cfg.MaxHTTPConns, c.log)
	}
	// The parts stop when shutdown stops them, in its order, not all at
	// once when ctx is cancelled.
	return startstop.StartAll(context.WithoutCancel(ctx), c.parts()...)
}

// parts lists the background parts that run, in the order they start.
func (c *Conductor) parts() []startstop.Service {
	var parts []startstop.Service
	if c.watch != nil {
		parts = append(parts, c.watch)
	}
	if c.storage != nil {
		// First, so that it stops last: its checkpoint after the others' writes.
		parts = append(parts, c.storage)
	}
	if c.batchEnds != nil {
		parts = append(parts, c.batchEnds)
	}
	if c.archive != nil {
		parts = append(parts, c.archive)
	}
	if c.strays != nil {
		parts = append(parts, c.strays) // stops before the archive it reads
	}
	if c.http != nil {
		parts = append(parts, c.http)
	}
	return parts
}

// Stop stops the conductor, as cancelling Start's context does, and
// returns once it has stopped. It is safe to call more than once, and
// returns at once if the conductor never started. The conductor stops in
// this order: the event streams end and NATS submissions are refused; the
// HTTP API stops (calls in flight get 10s); the subscriptions end; the
// ends taker saves the job counts and acks the ends they count a last
// time; the submissions in flight are answered; the batch watcher stops;
// the NATS connection drains; the embedded server shuts down.
func (c *Conductor) Stop() { c.life.Stop() }

// Stopped is closed when the conductor has stopped after a Start; before
// any Start it is closed already.
func (c *Conductor) Stopped() <-chan struct{} { return c.life.Stopped() }

// shutdown stops what start started, in the order Stop writes down.
func (c *Conductor) shutdown() {
	c.log.Info("conductor stopping")
	// Under submitMu: no NATS submission starts once closing has begun.
	c.submitMu.Lock()
	c.beginClose()
	c.submitMu.Unlock()
	if c.http != nil {
		c.http.Stop()
	}
	for _, sub := range c.subs {
		_ = sub.Unsubscribe()
	}
	if c.ends != nil {
		c.ends.Stop() // before the client and the batch watcher it feeds
	}
	if c.client != nil {
		c.client.Close()
	}
	c.wg.Wait()
	startstop.StopAll(c.parts()...) // the archive's expiry, the batch watcher, then the storage guard
	if c.archive != nil {
		c.archive.close()
	}
	if c.nc != nil {
		// Drain is asynchronous; the closed handler tells when it is over.
		if c.nc.Drain() != nil {
			c.nc.Close()
		}
		<-c.ncClosed
	}
	if c.ns != nil {
		c.ns.Shutdown()
		c.ns.WaitForShutdown()
	}
}

// NATSURL is the URL workers and services use to reach this conductor's NATS.
func (c *Conductor) NATSURL() string {
	if c.ns != nil {
		return c.ns.ClientURL()
	}
	return c.cfg.NATSURL
}

// HTTPAddr is the address the HTTP API listens on, or "" without one.
func (c *Conductor) HTTPAddr() string {
	if c.http == nil {
		return ""
	}
	return c.http.addr()
}

// connectInProcess connects to the embedded server in the process, with
// every power, as the conductor's own connection does.
func (c *Conductor) connectInProcess(name string) (*nats.Conn, error) {
	return nats.Connect("", nats.Name(name), nats.InProcessServer(c.ns), nats.Token(c.access.internal))
}

// Client is the conductor's own client, on its own connection.
func (c *Conductor) Client() *client.Client { return c.client }
