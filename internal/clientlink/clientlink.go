// Package clientlink gives pkg/conductor what it needs of a pkg/client
// Client beyond the Client's API, without making it API: conductord feeds
// its own Client the job ends it takes for itself (so the Client takes no
// job events), reads the hosts the Client has heard so far without
// waiting for the rest, and checks a pool command's fields as the Client
// does; RunBatch follows the job events on the Client's connection.
//
// pkg/client sets Of in its init, before any package that imports it runs;
// nothing but pkg/conductor uses it.
package clientlink

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/conductor-run/conductor/internal/subject"
)

// Link is what the owner of one Client may reach of it.
type Link struct {
	// Conn is the Client's connection, Space its namespace's subjects, and
	// RecheckInterval its Config.RecheckInterval.
	Conn            *nats.Conn
	Space           subject.Space
	RecheckInterval time.Duration
	// Feed makes the Client learn of job ends from JobEnded alone, instead
	// of subscribing to the job events for its waits. Call it before the
	// Client's first Wait.
	Feed func()
	// JobEnded wakes the waits of job id, which has ended: each reads the
	// job's state.
	JobEnded func(id string)
	// ListenHosts starts listening to the heartbeats, if the Client does
	// not yet: Config.HostWait counts from the first call.
	ListenHosts func() error
	// LiveHosts returns the live hosts heard so far, a []client.Host sorted
	// by host id, without waiting to have heard every one (nil before
	// ListenHosts).
	LiveHosts func() any

	// For the owner's tests: Waits counts the waits on job id, and
	// FollowsJobEvents reports whether the Client subscribed to the job
	// events.
	Waits            func(id string) int
	FollowsJobEvents func() bool
}

// Set by pkg/client.
var (
	// Of returns the Link of c, a *client.Client.
	Of func(c any) Link
	// PoolOps lists every pool command op, as the HTTP API routes them.
	PoolOps []string
	// CheckFields returns the Client's error (wrapping
	// client.ErrBadCommand) for a pool command op given fields it does not
	// take, set by their JSON names.
	CheckFields func(op string, set []string) error
)
