package conductor

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"golang.org/x/time/rate"

	"github.com/conductor-run/conductor/internal/hostsvc"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/tlsconf"
	"github.com/conductor-run/conductor/pkg/client"
	"github.com/conductor-run/conductor/pkg/lookup"
)

// Conductor is the hub: it holds (or connects to) the NATS server, owns the
// job stream and the state buckets, aggregates job counts and host
// heartbeats, and serves the HTTP API. Build it with New; it is what
// conductord runs.
type Conductor struct {
	cfg   Config
	space subject.Space
	log   *slog.Logger
	// accountConsumers is the bound on consumers of conductord's
	// JetStream account, 0 or less for none, read at start (nats.go).
	accountConsumers atomic.Int64
	access           *access     // who may connect, and with what role
	tls              *tls.Config // the NATS server's and the HTTP API's; nil: no TLS

	ns       *server.Server // nil with NATSURL
	nc       *nats.Conn
	ncClosed chan struct{} // closed by nc's closed handler
	js       jetstream.JetStream
	client   *client.Client
	batches  jetstream.KeyValue // the batch bucket
	subs     []*nats.Subscription
	// replicas is the replica count of every stream and bucket: set by
	// Start before it makes the first (replicas.go), then read only.
	replicas int

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
	// hostsLead serves the hosts' cancels while this conductord leads.
	hostsLead *startstop.Func
	lead      *leadership
	// leaderLease is the lease of the namespace's election: the leader
	// bucket's, if it was made before with another (Config.LeaderLease
	// otherwise); set by ensureStreams.
	leaderLease time.Duration // elects the conductord that does what must happen once (leader.go)
	// endsFeed wakes the waits from the ends as they pass (endsfeed.go):
	// all of them while another conductord leads (endsFeedAll), those of
	// the submissions waiting (submitWaits) while this one does.
	// endsFeedMu guards endsFeed.
	endsFeed    []*nats.Subscription
	endsFeedMu  sync.Mutex
	endsFeedAll atomic.Bool
	submitWaits atomic.Int64
	ends        *endsTaker         // takes the job ends: counts, batch ends, waits
	archive     *archiver          // keeps the final states past ArchiveAfter; nil with MemoryStorage
	stats       *stats             // the job counts, saved by the ends taker; no goroutine
	batchEnds   *batchEnds         // announces the end of each batch
	storage     *storageGuard      // keeps the store writable; nil without an embedded file store
	strays      *strayRepair       // repairs the job messages no consumer will deliver
	sweep       *consumerSweep     // removes the consumers of job types no host serves
	priorities  *priorityConsumers // makes the consumers of high and low jobs as they come
	reaper      *payloadReaper     // removes the payload objects of jobs ended for good
	largeBodies bodyBudget         // the bytes of large payloads being submitted over HTTP
	http        *httpServer        // the HTTP API; nil without Config.HTTPListen
	watch       startstop.Service  // reads the credentials file again when it changes
	hostsvc     *hostsvc.Server    // makes the hosts' consumers, passes the cancels on to them
	storeNC     *nats.Conn         // hostsvc's store's own connection; nil without an embedded server
	lookups     *lookup.Store      // the named lookups (lookups.go)
	lookupSvc   micro.Service      // serves them on NATS
	// lookupCache is the service's copy of the values read, which the
	// feed keeps true.
	lookupCache *lookup.Cache
	// lookupFeed publishes their changes for the hosts' caches.
	lookupFeed *startstop.Func
	// handling counts the workers' requests being handled (requests.go).
	handling *handling
	// statsRoller rolls the workers' counters up; workerStatsRun runs
	// it (workerstats.go).
	statsRoller    *statsRoller
	workerStatsRun *startstop.Func
	// console samples for the console's streams; consoleRun runs it
	// (console.go).
	console    *consoleHub
	consoleRun *startstop.Func
	// onConsoleSample, if set, is called after each console sample: a
	// test signal, set between New and Start; nil in production.
	onConsoleSample func()
	// endRefusals spaces the log lines of hosts' ends refused.
	endRefusals *rate.Limiter
	types       *jobTypes // the job types queued, bounded

	// onEnds, if set, is called once jobEnds has handled a message, with
	// the ids of the jobs whose end it passed to the client: a test
	// signal, set between New and Start; nil in production.
	onEnds func(ended []string)
	// ackEnds, if set, acks an ends message whose counts are saved, in
	// place of its DoubleAck: a test signal, set between New and Start;
	// nil in production. It is called from the ends taker's acker, up to
	// endsAcksInFlight at once.
	ackEnds func(ctx context.Context, m jetstream.Msg) error
	// leaveEnds, if set, is asked of each ends message delivered; if it
	// returns true, the taker leaves the message, neither taken nor
	// acked, as a conductord killed once it was delivered does: a test
	// signal, set between New and Start; nil in production.
	leaveEnds func(m jetstream.Msg) bool
	// endsLease, if set (by tests, before Start), replaces endsAckWait
	// as the ends consumer's ack wait.
	endsLease time.Duration
	// batchStall, if set (by tests, before Start), replaces
	// client.BatchStall.
	batchStall time.Duration
	// onStrayPass, if set, is called after each pass of the stray
	// repair: a test signal, set between New and Start; nil in production.
	onStrayPass func(strayPass)
	// onConsumerPass, if set, is called after each pass of the consumer
	// sweep with the types whose consumers it removed: a test signal, set
	// between New and Start; nil in production.
	onConsumerPass func(removed []string)
	// onPayloadRemoved, if set, is called for each payload object the
	// payload reaper removed (true) or left (false): a test signal, set
	// between New and Start; nil in production.
	onPayloadRemoved func(object string, removed bool)
	// onEventsCut, if set, is called when a stream (events, logs) is cut off
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
	if err := cfg.checkNATSClient(); err != nil {
		return nil, err
	}
	if err := cfg.checkLeaderLease(); err != nil {
		return nil, err
	}
	if err := cfg.checkReplicas(); err != nil {
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
	if cfg.StatsInterval < 0 {
		return nil, fmt.Errorf("conductor: StatsInterval %v is negative", cfg.StatsInterval)
	}
	if cfg.ConsumerIdle < 0 || cfg.ConsumerIdle > 0 && cfg.ConsumerIdle < MinConsumerIdle {
		return nil, fmt.Errorf("conductor: bad consumer idle time %s: want %s or more, or 0 for the default", cfg.ConsumerIdle, MinConsumerIdle)
	}
	switch {
	case cfg.MaxPayload < 0 || cfg.MaxPayload > MaxPayloadLimit:
		return nil, fmt.Errorf("conductor: bad payload limit %d bytes: want 1 to %d, or 0 for the default", cfg.MaxPayload, MaxPayloadLimit)
	case cfg.InlinePayload < 0 || cfg.InlinePayload > cfg.MaxPayload:
		return nil, fmt.Errorf("conductor: bad inline payload limit %d bytes: want 1 to the payload limit (%d), or 0 for the default", cfg.InlinePayload, cfg.MaxPayload)
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
		endRefusals: rate.NewLimiter(1, 5),
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
	} else {
		own, err := c.cfg.natsClientOptions()
		if err != nil {
			return err
		}
		if err := probeNATS(url, own); err != nil {
			return err
		}
		opts = append(opts, own...)
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
		Namespace: c.cfg.Namespace, MaxPayload: c.cfg.MaxPayload, InlinePayload: c.inlinePayload(),
		FeedEnds: true, ListenHosts: true,
		Logger: c.log.With("component", "hosts"),
	}); err != nil {
		return err
	}
	leaders, err := c.js.KeyValue(ctx, c.space.LeaderBucket())
	if err != nil {
		return fmt.Errorf("conductor: open the leader bucket: %w", err)
	}
	run := uuid.NewString()[:8]
	id, prev := conductordID(c.cfg.DataDir, run)
	c.lead = newLeadership(leaders, id, c.leaderLease, c.log.With("component", "leader"))
	c.lead.value, c.lead.prev = id+"/"+run, prev
	c.lead.remake = func(ctx context.Context) (jetstream.KeyValue, error) {
		if err := c.ensureLeaderBucket(ctx); err != nil {
			return nil, err
		}
		return c.js.KeyValue(ctx, c.space.LeaderBucket())
	}
	c.lead.first(ctx)
	if err := c.lead.Start(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	batches, err := c.js.KeyValue(ctx, c.space.BatchBucket())
	if err != nil {
		return fmt.Errorf("conductor: open the batch bucket: %w", err)
	}
	c.batchEnds = newBatchEnds(batches, c.client, c.nc, c.space, c.log, cmp.Or(c.batchStall, client.BatchStall))
	c.batchEnds.lead = c.lead
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
	c.sweep = newConsumerSweep(c)
	c.priorities = newPriorityConsumers(c)
	c.reaper = newPayloadReaper(c)
	if c.ns != nil {
		// The hosts' store on a connection of its own (hostsvc.Config).
		if c.storeNC, err = c.connectInProcess("conductord-store"); err != nil {
			return fmt.Errorf("conductor: connect the hosts' store: %w", err)
		}
	}
	c.hostsvc = hostsvc.NewServer(hostsvc.Config{
		Conn: c.nc, StoreConn: c.storeNC, JS: c.js, Space: c.space, Log: c.log.With("component", "hostsvc"),
		Admit: c.admitHost, Made: c.madeForHost, Archived: c.archived, Archive: c.archiveFinals, Go: func(f func()) bool { return c.serveAsync(func() {}, f) },
		Elected: true,
	})
	// Its store first: the ends taker checks the hosts' ends with it.
	if err := c.hostsvc.Open(ctx); err != nil {
		return err
	}
	if err := c.startLookups(ctx); err != nil {
		return err
	}
	c.feedEnds(true) // until this conductord leads
	if c.ends, err = newEndsTaker(ctx, c); err != nil {
		return err
	}
	if err := c.serveSubmits(c.closing); err != nil {
		return err
	}
	if err := c.serveJobReads(); err != nil {
		return err
	}
	if err := c.serveHandlers(); err != nil {
		return err
	}
	c.workerStatsRun = c.startStats()
	c.consoleRun = c.startConsole()
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
	if err := startstop.StartAll(context.WithoutCancel(ctx), c.parts()...); err != nil {
		return err
	}
	c.hostsLead = startstop.NewFunc(func(ctx context.Context) {
		c.lead.each(ctx, func(term context.Context) {
			if err := c.hostsvc.Lead(true); err != nil {
				c.lead.abdicate(fmt.Sprintf("the hosts' cancels cannot be served: %v", err))
				return
			}
			<-term.Done()
			_ = c.hostsvc.Lead(false)
		})
	})
	return c.hostsLead.Start(context.WithoutCancel(ctx))
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
	if c.sweep != nil {
		parts = append(parts, c.sweep)
	}
	if c.priorities != nil {
		parts = append(parts, c.priorities)
	}
	if c.reaper != nil {
		parts = append(parts, c.reaper)
	}
	if c.hostsvc != nil {
		parts = append(parts, c.hostsvc)
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
	c.stopLookups()
	if c.workerStatsRun != nil {
		c.workerStatsRun.Stop() // before the client whose hosts it reads
	}
	if c.consoleRun != nil {
		c.consoleRun.Stop() // likewise
	}
	if c.ends != nil {
		c.ends.Stop() // before the client and the batch watcher it feeds
	}
	if c.client != nil {
		c.client.Close()
	}
	c.wg.Wait()
	c.waitHandlers()
	if c.hostsLead != nil {
		c.hostsLead.Stop()
	}
	startstop.StopAll(c.parts()...) // the archive's expiry, the batch watcher, then the storage guard
	if c.lead != nil {
		c.lead.Stop() // the lease given up once what the leader does has stopped
	}
	if c.archive != nil {
		c.archive.close()
	}
	if c.storeNC != nil {
		c.storeNC.Close() // the store stopped with hostsvc
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
