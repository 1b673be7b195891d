package conductor

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
)

// The election's settings and names (leader.go runs it): the lease's
// bounds, a conductord's id, the leader bucket, and what GET /v1/leader
// tells.

// DefaultLeaderLease is Config.LeaderLease's default; MinLeaderLease and
// MaxLeaderLease bound it.
const (
	DefaultLeaderLease = 5 * time.Second
	MinLeaderLease     = 300 * time.Millisecond
	MaxLeaderLease     = time.Minute
)

// checkLeaderLease checks c.LeaderLease, set to its default.
func (c *Config) checkLeaderLease() error {
	if c.LeaderLease < MinLeaderLease || c.LeaderLease > MaxLeaderLease {
		return fmt.Errorf("conductor: bad leader lease %s (--leader-lease): want %s to %s", c.LeaderLease, MinLeaderLease, MaxLeaderLease)
	}
	return nil
}

// validID matches the ids a conductord takes: a key's token of the
// leader bucket, and a subject token.
var validID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// conductordID returns this conductord's id in the election, kept in
// dataDir (a new one without a data directory), and the lease value its
// previous run wrote (leadership.prev), recording run's for the next. The
// host name is in the id for the operator.
func conductordID(dataDir, run string) (id, prev string) {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, host)
	host = strings.Trim(host, "-")
	if len(host) > 40 {
		host = host[:40]
	}
	if host == "" {
		host = "conductord"
	}
	fresh := func() string { return host + "-" + uuid.NewString()[:8] }
	if dataDir == "" {
		return fresh(), ""
	}
	path := filepath.Join(dataDir, "conductord.id")
	if b, err := os.ReadFile(path); err == nil {
		id = strings.TrimSpace(string(b))
	}
	if !validID.MatchString(id) {
		id = fresh()
		if err := os.MkdirAll(dataDir, 0o750); err == nil {
			_ = os.WriteFile(path, []byte(id+"\n"), 0o640)
		}
	}
	runPath := filepath.Join(dataDir, "conductord.run")
	if b, err := os.ReadFile(runPath); err == nil {
		prev = strings.TrimSpace(string(b))
	}
	_ = os.WriteFile(runPath, []byte(id+"/"+run+"\n"), 0o640)
	return id, prev
}

// leaderBucketConfig is the leader bucket's configuration: every key
// lives a lease past its last write.
func leaderBucketConfig(space subject.Space, lease time.Duration, storage jetstream.StorageType) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      space.LeaderBucket(),
		Description: "conductord leader lease and members",
		TTL:         lease,
		History:     1,
		Storage:     storage,
	}
}

// conflict reports whether err is JetStream's refusal of a write at a
// revision that is not the key's last (on one server or replicated).
func conflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// LeaderInfo is what a conductord knows of its namespace's election
// (GET /v1/leader).
type LeaderInfo struct {
	// Conductord is this conductord's id (kept in its data directory).
	Conductord string `json:"conductord"`
	// Leader is the leader's id as last read; empty when unknown (none
	// holds the lease, or it could not be read).
	Leader string `json:"leader,omitempty"`
	// Leading is whether this conductord leads now.
	Leading bool `json:"leading"`
	// Members is how many conductords of the namespace were alive at the
	// last count, this one included.
	Members int `json:"members"`
	// Terms is how many terms this conductord has won since it started.
	Terms uint64 `json:"terms"`
	// Lease is the leader's lease (Config.LeaderLease).
	Lease string `json:"lease"`
}

// Leader returns what this conductord knows of the election; the zero
// LeaderInfo before Start.
func (c *Conductor) Leader() LeaderInfo {
	l := c.lead
	if l == nil {
		return LeaderInfo{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return LeaderInfo{
		Conductord: l.id, Leader: l.holder, Leading: l.leadingLocked(), Members: l.members,
		Terms: l.terms.Load(), Lease: l.lease.String(),
	}
}

// getLeader serves GET /v1/leader.
func (c *Conductor) getLeader(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, c.Leader())
}
