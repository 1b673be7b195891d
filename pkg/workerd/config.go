package workerd

import (
	"cmp"
	"errors"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/conductor-run/conductor/internal/agent"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
)

// DefaultNATSURL is the conductor's NATS URL when Config.NATSURL is empty:
// a conductord on the same host.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// DefaultJobLease is Config.JobLease's default; MinJobLease and
// MaxJobLease bound it, as conductord bounds the lease a host asks for.
const (
	DefaultJobLease = 30 * time.Second
	MinJobLease     = time.Second
	MaxJobLease     = time.Hour
)

// DefaultMaxPoolSize is the default of Config.MaxPoolSize: the most
// workers one pool may have on a host.
const DefaultMaxPoolSize = 256

// ErrNoPools is returned by Run when neither Config.ConfigFile nor
// Config.Pools gives a pool to run.
var ErrNoPools = errors.New("no pools")

// Config configures Run. The zero value runs nothing (ErrNoPools); set
// Pools or ConfigFile.
type Config struct {
	// NATSURL is the conductor's NATS URL. Default DefaultNATSURL.
	NATSURL string
	// Token, when set, is presented to the conductor's NATS. Empty: none,
	// or the one of TokenFile.
	Token string
	// TokenFile, when set, names a file that holds the token: read once,
	// as Run starts, its trailing newline trimmed. It is the preferred form
	// (a command line shows in every local user's process list). Run
	// refuses a file it cannot read, an empty one, one over 64 KiB, and a
	// Token given as well; it warns when group or other users may read the
	// file. Empty: Token.
	TokenFile string
	// TLSCA is the PEM file of the conductor's NATS certificate issuer
	// (default: the system's roots, if the server speaks TLS); TLSCert and
	// TLSKey are this host's client certificate and key, for a conductor
	// that requires them (conductord --tls-verify). Empty: none.
	TLSCA, TLSCert, TLSKey string
	// NATSCreds, when set, names a NATS credentials file (a user JWT and
	// its seed) that workerd authenticates with, instead of or besides
	// Token: for NATS servers of your own run in operator mode
	// (docs/deployment.md). Run refuses a file it cannot read. Empty: none.
	NATSCreds string
	// JobLease is how long a job this host took stays its own without word
	// from it: workerd extends the lease of every job it holds, so a job
	// may run longer; if the host is lost (killed, cut off), its jobs go
	// to other hosts this long after its last extension. Shorter is a
	// faster redelivery after a loss, for more extensions sent meanwhile.
	// The consumers of a type are shared by its hosts, and keep the
	// longest lease any asked for. Default DefaultJobLease; MinJobLease
	// to MaxJobLease.
	JobLease time.Duration
	// MaxPoolSize bounds every pool's count on this host: a pool of
	// Pools or ConfigFile above it is refused at start and by a reload, a
	// resize command above it is refused in its answer. Default (zero or
	// negative) DefaultMaxPoolSize.
	MaxPoolSize int
	// HostID is this host's id, a subject token, under which its workers
	// are announced and its pools are commanded. Default DefaultHostID().
	HostID string
	// Namespace is the conductor's namespace. Default "default".
	Namespace string
	// ConfigFile, when set, is a YAML file of pools (broker.LoadConfig),
	// read at start and again on each Reload. Empty: Pools only.
	ConfigFile string
	// Pools are run after those of ConfigFile, and kept as they are by a
	// Reload. Pool names must be distinct across both.
	Pools []broker.Spec
	// Logger receives workerd's, the pools' and the workers' logs.
	// Default: discard.
	Logger *slog.Logger
	// Reload, when it yields a value, makes Run re-read ConfigFile and apply
	// the difference to the running pools: added, removed, resized and
	// rolled over one worker at a time. A file that does not load changes
	// nothing. workerd sends a value on SIGHUP. Nil: never.
	Reload <-chan struct{}
	// Kill, once Run's ctx is done and the graceful stop has begun, stops
	// every worker now (SIGKILL to each process group); their jobs are
	// redelivered. A value or a close will do. workerd closes it on a
	// second SIGINT or SIGTERM. Nil: the stop is always graceful.
	Kill <-chan struct{}
	// Cgroups says whether the pools' processes are contained in cgroups:
	// broker.CgroupsAuto (where the host allows it, else in process groups
	// only) or broker.CgroupsOff. Run logs once, as it starts, which it is
	// and why (docs/supervision.md, "Containment"). It is the process's
	// choice: see broker.SetCgroups. Default broker.CgroupsAuto.
	Cgroups broker.Cgroups
}

// DefaultHostID is the host id when Config.HostID is empty: the hostname,
// with every character that may not be in a subject token replaced by '-'.
func DefaultHostID() string {
	hostname, _ := os.Hostname()
	return subject.Sanitize(hostname)
}

// withDefaults returns c with its defaults filled in.
func (c Config) withDefaults() Config {
	c.NATSURL = cmp.Or(c.NATSURL, DefaultNATSURL)
	c.Namespace = cmp.Or(c.Namespace, "default")
	c.Cgroups = cmp.Or(c.Cgroups, broker.CgroupsAuto)
	if c.MaxPoolSize <= 0 {
		c.MaxPoolSize = DefaultMaxPoolSize
	}
	c.JobLease = cmp.Or(c.JobLease, DefaultJobLease)
	if c.HostID == "" {
		c.HostID = DefaultHostID()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// loadPools returns the pools of the config file, if any, then Pools,
// each within MaxPoolSize.
func (c Config) loadPools() ([]broker.Spec, error) {
	pools := slices.Clone(c.Pools)
	if c.ConfigFile != "" {
		fromFile, err := broker.LoadConfig(c.ConfigFile)
		if err != nil {
			return nil, err
		}
		pools = append(fromFile, pools...)
	}
	if err := agent.CheckPoolSizes(pools, c.MaxPoolSize); err != nil {
		return nil, err
	}
	return pools, nil
}
