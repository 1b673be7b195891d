package conductor

import (
	"cmp"
	"errors"
	"fmt"
	"time"
)

// Sync is when the embedded server fsyncs its JetStream store.
type Sync string

const (
	// SyncInterval fsyncs every Config.SyncInterval (default 2m): a write
	// is in the file (the kernel's page cache) before it is acknowledged,
	// so a crash of conductord loses nothing, but a power loss or a crash
	// of the operating system loses what was acknowledged since the last
	// fsync. JetStream's default, and conductor's.
	SyncInterval Sync = "interval"
	// SyncAlways fsyncs after every write, before it is acknowledged: a
	// power loss loses nothing acknowledged, at the cost of an fsync per
	// write (a burst of writes shares one) on the job path.
	SyncAlways Sync = "always"
)

// DefaultSyncInterval is Config.SyncInterval's default, JetStream's own.
const DefaultSyncInterval = 2 * time.Minute

// ErrSyncNotApplicable is New's error for a Config.Sync or SyncInterval
// that cannot apply: the store is another server's (NATSURL) or in
// memory (MemoryStorage).
var ErrSyncNotApplicable = errors.New("conductor: sync settings apply only to the embedded server's file store")

// ParseSync reads a Sync from its name, as the --sync flag gives it.
func ParseSync(s string) (Sync, error) {
	switch Sync(s) {
	case SyncInterval, SyncAlways:
		return Sync(s), nil
	}
	return "", fmt.Errorf("conductor: bad sync %q: want %q or %q", s, SyncAlways, SyncInterval)
}

// checkSync checks the sync settings of c and fills in their defaults.
func (c *Config) checkSync() error {
	set := c.Sync != "" || c.SyncInterval != 0
	switch {
	case set && c.NATSURL != "":
		return fmt.Errorf("%w: with a NATS URL the store is that server's; set sync_interval (a duration, or always) in its jetstream block", ErrSyncNotApplicable)
	case set && c.MemoryStorage:
		return fmt.Errorf("%w: with memory storage nothing is written to disk", ErrSyncNotApplicable)
	case c.NATSURL != "" || c.MemoryStorage:
		return nil
	case c.SyncInterval < 0:
		return fmt.Errorf("conductor: bad sync interval %s: want a positive duration", c.SyncInterval)
	}
	if c.Sync == "" {
		c.Sync = SyncInterval
	}
	if _, err := ParseSync(string(c.Sync)); err != nil {
		return err
	}
	if c.Sync == SyncAlways && c.SyncInterval != 0 {
		return fmt.Errorf("conductor: sync interval %s applies to sync %q; with %q every write is synced", c.SyncInterval, SyncInterval, SyncAlways)
	}
	if c.Sync == SyncInterval {
		c.SyncInterval = cmp.Or(c.SyncInterval, DefaultSyncInterval)
	}
	return nil
}
