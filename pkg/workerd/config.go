package workerd

import (
	"cmp"
	"errors"
	"log/slog"
	"os"
	"slices"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/broker"
)

// DefaultNATSURL is the conductor's NATS URL when Config.NATSURL is empty:
// a conductord on the same host.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// ErrNoPools is returned by Run when neither Config.ConfigFile nor
// Config.Pools gives a pool to run.
var ErrNoPools = errors.New("no pools")

// Config configures Run. The zero value runs nothing (ErrNoPools); set
// Pools or ConfigFile.
type Config struct {
	// NATSURL is the conductor's NATS URL. Default DefaultNATSURL.
	NATSURL string
	// Token, when set, is presented to the conductor's NATS. Empty: none.
	Token string
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
	if c.HostID == "" {
		c.HostID = DefaultHostID()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// loadPools returns the pools of the config file, if any, then Pools.
func (c Config) loadPools() ([]broker.Spec, error) {
	if c.ConfigFile == "" {
		return slices.Clone(c.Pools), nil
	}
	fromFile, err := broker.LoadConfig(c.ConfigFile)
	if err != nil {
		return nil, err
	}
	return append(fromFile, c.Pools...), nil
}
