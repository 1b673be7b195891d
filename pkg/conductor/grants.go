package conductor

import (
	"slices"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/subject"
)

// What each role may publish and subscribe to on the embedded NATS
// server, which enforces it (docs/security.md, "Roles"). Everything is
// allowed by name, nothing by exception: a subject no grant names is
// refused. The JetStream API is granted request by request, on this
// namespace's streams only: no role but admin may create, change, purge
// or delete a stream, nor any consumer of the job stream but a host its
// own types'.

// grants returns the permissions of credential cr on the conductor of
// namespace sp; nil (everything) for an admin.
func grants(sp subject.Space, cr auth.Credential) *server.Permissions {
	g := grant{sp: sp}
	g.sub(auth.InboxOf(cr.ID) + ".>")
	if cr.Role != auth.Submitter {
		g.pub(subject.JSAPI("INFO"))
	}
	switch cr.Role {
	case auth.Admin:
		return nil
	case auth.Submitter:
		g.submitter(cr.ID, cr.Types)
	case auth.Host:
		g.host(cr)
	case auth.Operator:
		g.operator()
	}
	return g.permissions()
}

type grant struct {
	sp   subject.Space
	pubs []string
	subs []string
}

// pub grants publishing to each of s, once.
func (g *grant) pub(s ...string) {
	for _, x := range s {
		if !slices.Contains(g.pubs, x) {
			g.pubs = append(g.pubs, x)
		}
	}
}
func (g *grant) sub(s ...string) { g.subs = append(g.subs, s...) }

// permissions are the grant's. No role has the server's response
// permissions (allow_responses): they cost the server a check of every
// message delivered with a reply subject, every job's, and a host
// answers commands on their own kind of reply subject
// (subject.ControlReplies) instead.
func (g *grant) permissions() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: g.pubs},
		Subscribe: &server.SubjectPermission{Allow: g.subs},
	}
}

// types is each of the job types, or the wildcard for every type.
func types(ts []string) []string {
	if len(ts) == 0 {
		return []string{"*"}
	}
	return ts
}

// readStates lets the holder read a job's state by id.
func (g *grant) readStates() {
	st := subject.KVStream(g.sp.StateBucket())
	g.pub(subject.JSAPI("STREAM.INFO", st), subject.JSAPI("DIRECT.GET", st, ">"), subject.JSAPI("STREAM.MSG.GET", st),
		g.sp.ArchiveGet())
}

// submitter queues jobs of its types through conductord, on its own
// submit subjects (conductord stores the state and queues the job, so
// that the submitter writes neither, and bounds the submissions each
// credential has waiting), reads its types' jobs' states through
// conductord, and follows the ends of its types' jobs.
func (g *grant) submitter(id string, ts []string) {
	// No JetStream API at all: a request's answer goes where its reply
	// subject says, and the server's answers would be writes the
	// submitter may not make. It reads states through conductord.
	g.pub(g.sp.JobAs(id))
	for _, t := range types(ts) {
		g.pub(g.sp.SubmitAs(id, t))
		g.sub(g.sp.TypeJobEvents(t))
	}
}

// host takes, runs and ends the jobs of its types, and heartbeats, logs
// (of its types' pools), answers for the tail of its logs and takes
// commands under its own host id (both answered on
// subject.ControlReplies only). It reads states by id. It makes no
// consumer and writes no state or dead entry itself: conductord
// makes its types' consumers, passes the cancels on to it, and writes
// its types' states for it, checked (internal/hostsvc), for a consumer
// delivers where its maker says and a store takes any header (a roll-up
// purges a bucket).
func (g *grant) host(cr auth.Credential) {
	sp, id := g.sp, cr.Host()
	jobs := sp.JobStream()
	g.pub(sp.Host(id), sp.WorkerEvents(), sp.PoolEvents())
	g.sub(sp.Control(id), sp.LogTail(id), sp.CancelFeed(), sp.LookupFeed())
	g.pub(subject.ControlReplies()...)
	g.pub(sp.CancelsAs(cr.ID))
	for _, t := range types(cr.Types) {
		// The output of its types' pools only (a pool is named by its
		// type): not lines in another type's logs.
		g.pub(sp.Logs(id, t), sp.JobEnds(t), sp.TypeJobEvents(t), sp.ConsumersAs(cr.ID, t), sp.StoreAs(cr.ID, t))
		for _, prio := range []string{"normal", "high", "low"} {
			c := sp.ConsumerAt(t, prio)
			if t == "*" {
				c = "*" // pool-*, high-* and low-* are no subjects
			}
			g.pub(subject.JSAPI("CONSUMER.MSG.NEXT", jobs, c), subject.JSAcks(jobs, c))
		}
	}
	g.pub(subject.JSAPI("STREAM.INFO", jobs), subject.JSAPI("STREAM.INFO", sp.EndsStream()))
	g.pub(sp.Lookups())  // its workers' lookups, through conductord's service
	g.pub(sp.Requests()) // its workers' requests of the conductor side
	// Its types' states it reads through conductord (ReadAs), not the
	// bucket, keyed by id alone; workerd opens the bucket all the same.
	g.pub(subject.JSAPI("STREAM.INFO", subject.KVStream(sp.StateBucket())))
	for _, t := range types(cr.Types) {
		g.pub(sp.ReadAs(cr.ID, t), sp.PayloadAs(cr.ID, t))
	}
}

// operator steers: pool commands, events, logs, heartbeats, jobs of every
// type read, listed, cancelled and re-queued, batches, submissions.
func (g *grant) operator() {
	sp := g.sp
	g.readStates()
	g.pub(sp.Controls(), sp.LogTails(), sp.Submits(), sp.Jobs(), sp.Lookups())
	g.sub(sp.AllEvents(), sp.Hosts(), sp.AllLogs())
	jobs := sp.JobStream()
	g.pub(subject.JSAPI("STREAM.INFO", jobs), subject.JSAPI("CONSUMER.INFO", jobs, "*"), subject.JSAPI("CONSUMER.LIST", jobs),
		subject.JSAPI("CONSUMER.NAMES", jobs), subject.JSAPI("STREAM.INFO", sp.EndsStream()))
	for _, b := range []string{sp.StateBucket(), sp.CancelBucket(), sp.DeadBucket(), sp.BatchBucket(), sp.StatsBucket()} {
		kv := subject.KVStream(b)
		g.pub(subject.KVAll(b), subject.JSAPI("STREAM.INFO", kv), subject.JSAPI("DIRECT.GET", kv, ">"),
			subject.JSAPI("DIRECT.GET", kv), subject.JSAPI("STREAM.MSG.GET", kv),
			subject.JSAPI("CONSUMER.CREATE", kv, ">"), subject.JSAPI("CONSUMER.DELETE", kv, ">"),
			subject.JSAPI("CONSUMER.MSG.NEXT", kv, ">"), subject.JSFlowControl(kv))
	}
	// A cancel of a queued job announces its end, as a host does.
	g.pub(sp.JobEvents(), sp.AllJobEnds())
}
