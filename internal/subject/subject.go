// Package subject owns every NATS subject, stream, consumer and bucket name
// that conductor uses. Nothing else in the tree builds a subject by hand.
//
// Names go broad to narrow:
//
//	conductor.<ns>.jobs.<type>           job stream (JetStream, work queue): normal jobs
//	conductor.<ns>.jobs.<type>.<prio>    the same, high or low jobs
//	conductor.<ns>.events.job.<type>.<status>  end of every job attempt (core NATS)
//	conductor.<ns>.hosts.<host>          workerd heartbeat with its workers (core NATS)
//	conductor.<ns>.control.<host>        commands to one workerd, request/reply (core NATS)
//	conductor.<ns>.submit.<type>         job submission by request, answered when the job ends (core NATS)
//	conductor.<ns>.as.<id>.submit.<type> the same, by the holder of credential id
//	conductor.<ns>.as.<id>.job           a job's state read by the holder of credential id (request/reply)
//	conductor.<ns>.events.worker.<pool>.<kind>  worker lifecycle events (core NATS)
//	conductor.<ns>.events.pool.<pool>.<kind>    pool lifecycle events (core NATS)
//	conductor.<ns>.logs.<host>.<pool>    workers' stdout/stderr lines (core NATS)
//	conductor.<ns>.tail.<host>           the last lines a host kept of a pool's output, by request (core NATS)
//
// Every token (namespace, job type, host id) is checked by Token before use.
package subject

import (
	"strings"

	"github.com/conductor-run/conductor/internal/token"
)

// Root is the first token of every conductor subject.
const Root = "conductor"

// MaxTokenLen bounds the length of a namespace, job type or host id.
const MaxTokenLen = token.MaxLen

// ErrBadToken is wrapped by every error Token returns.
var ErrBadToken = token.ErrInvalid

// Token reports whether s may be used as a namespace, job type, pool name or
// host id: 1 to MaxTokenLen characters from [A-Za-z0-9_-]. Such a token is
// safe in a NATS subject, a stream name and a key-value bucket name. The
// rule is internal/token's, which pkg/broker checks pool names with.
func Token(kind, s string) error { return token.Check(kind, s) }

// Sanitize turns s into a valid token by replacing every other character
// with '-'. It is used for defaults such as the hostname, never for user
// input, which is rejected instead.
func Sanitize(s string) string { return token.Sanitize(s) }

// Space is one namespace's set of names. The zero value is not usable; call New.
type Space struct {
	ns string
}

// New returns the names of namespace ns.
func New(ns string) (Space, error) {
	if err := Token("namespace", ns); err != nil {
		return Space{}, err
	}
	return Space{ns: ns}, nil
}

// Namespace returns the namespace this Space names.
func (s Space) Namespace() string { return s.ns }

// Job is the subject a job of type typ is published to.
func (s Space) Job(typ string) string { return s.prefix() + ".jobs." + typ }

// JobAt is the subject a job of type typ and priority prio is published to:
// Job(typ) for a normal job (prio "normal" or ""), Job(typ) + "." + prio
// for a high or low one.
func (s Space) JobAt(typ, prio string) string {
	if prio == "" || prio == "normal" {
		return s.Job(typ)
	}
	return s.Job(typ) + "." + prio
}

// Jobs matches every subject under the jobs prefix, those JobSubjects
// takes and any other: a filter to read the job stream with, not its
// subjects.
func (s Space) Jobs() string { return s.prefix() + ".jobs.>" }

// JobSubjects are the job stream's subjects: exactly those a pool's
// consumers read (JobAt of every type and priority), so that a publish to
// any other subject under the jobs prefix finds no stream and is refused
// (no responders) instead of being stored and never run.
func (s Space) JobSubjects() []string {
	j := s.prefix() + ".jobs.*"
	return []string{j, j + ".high", j + ".low"}
}

// ParseJob returns the job type and priority of a subject built by Job or
// JobAt ("normal" for Job's), or "", "" if subj is not one.
func (s Space) ParseJob(subj string) (typ, prio string) {
	rest, ok := strings.CutPrefix(subj, s.prefix()+".jobs.")
	if !ok {
		return "", ""
	}
	typ, prio, ok = strings.Cut(rest, ".")
	if !ok {
		prio = "normal"
	} else if prio != "high" && prio != "low" {
		return "", ""
	}
	if Token("job type", typ) != nil {
		return "", ""
	}
	return typ, prio
}

// Submit is the subject conductord answers job submissions of type typ
// on, by NATS request (the reply comes when the job ends).
func (s Space) Submit(typ string) string { return s.prefix() + ".submit." + typ }

// SubmitAs is the subject the holder of credential id submits jobs of
// type typ on: conductord knows who asks from the subject, which the
// server lets that credential alone publish to, and bounds each
// credential's submissions waiting at once.
func (s Space) SubmitAs(id, typ string) string { return s.prefix() + ".as." + id + ".submit." + typ }

// SubmitsAs matches SubmitAs of every credential and type.
func (s Space) SubmitsAs() string { return s.prefix() + ".as.*.submit.*" }

// ParseSubmitAs returns the credential id and job type of a subject built
// by SubmitAs, or "", "".
func (s Space) ParseSubmitAs(subj string) (id, typ string) {
	rest, ok := strings.CutPrefix(subj, s.prefix()+".as.")
	if !ok {
		return "", ""
	}
	id, typ, ok = strings.Cut(rest, ".submit.")
	if !ok || Token("credential id", id) != nil || Token("job type", typ) != nil {
		return "", ""
	}
	return id, typ
}

// JobAs is the subject the holder of credential id reads a job's state
// on, by request (its id the request's body): conductord answers with the
// job of one of the credential's types, or 404.
func (s Space) JobAs(id string) string { return s.prefix() + ".as." + id + ".job" }

// JobsAs matches JobAs of every credential.
func (s Space) JobsAs() string { return s.prefix() + ".as.*.job" }

// JobAsOf returns the credential id of a subject built by JobAs, or "".
func (s Space) JobAsOf(subj string) string {
	rest, ok := strings.CutPrefix(subj, s.prefix()+".as.")
	if !ok {
		return ""
	}
	id, ok := strings.CutSuffix(rest, ".job")
	if !ok || Token("credential id", id) != nil {
		return ""
	}
	return id
}

// The services conductord gives hosts, so that a host makes no consumer
// of its own (a consumer's deliveries go where its maker says:
// docs/security.md, "A host's own account"): the consumers of a job type
// made for it, and the cancelled job ids, read by request and followed on
// CancelFeed.

// ConsumersAs is the subject the holder of host credential id asks
// conductord on for the consumers of job type typ.
func (s Space) ConsumersAs(id, typ string) string {
	return s.prefix() + ".as." + id + ".consumers." + typ
}

// ConsumersOf is ConsumersAs for a host with no credential of its own
// (an open conductor, the shared token), which only an admin may
// publish to.
func (s Space) ConsumersOf(typ string) string { return s.prefix() + ".consumers." + typ }

// CancelsAs is the subject the holder of host credential id reads the
// cancelled job ids on, by request, page by page.
func (s Space) CancelsAs(id string) string { return s.prefix() + ".as." + id + ".cancels" }

// CancelsOf is CancelsAs for a host with no credential of its own.
func (s Space) CancelsOf() string { return s.prefix() + ".cancels.held" }

// CancelFeed is the subject conductord publishes each new cancelled job
// id on, numbered.
func (s Space) CancelFeed() string { return s.prefix() + ".cancels" }

// StoreAs is the subject the holder of host credential id writes the
// states and dead entries of job type typ's jobs on, through conductord,
// many in one request (wire.StoreItem).
func (s Space) StoreAs(id, typ string) string {
	return s.prefix() + ".as." + id + ".store." + typ
}

// ReadAs is the subject the holder of host credential id reads the state
// of a job of type typ on, through conductord, by request.
func (s Space) ReadAs(id, typ string) string {
	return s.prefix() + ".as." + id + ".read." + typ
}

// PayloadAs is the subject the holder of host credential id reads the
// payloads passed by reference of job type typ's jobs on, through
// conductord, by request (wire.PayloadRead).
func (s Space) PayloadAs(id, typ string) string {
	return s.prefix() + ".as." + id + ".payload." + typ
}

// LookupBucket is the name of the key-value bucket of the namespace's
// named lookups (pkg/lookup).
func (s Space) LookupBucket() string { return Root + "-" + s.ns + "-lookups" }

// LookupService is the prefix of the lookup service's subjects
// (<prefix>.get, .set, .del, .keys: pkg/lookup.Serve).
func (s Space) LookupService() string { return s.prefix() + ".lookup" }

// Lookups matches every subject of the lookup service.
func (s Space) Lookups() string { return s.LookupService() + ".*" }

// LookupFeed is the subject conductord publishes each change of the
// lookups on, and every second the last revision (lookup.Store.Feed):
// the hosts' caches follow it. It is outside Lookups, which hosts may
// publish to.
func (s Space) LookupFeed() string { return s.prefix() + ".lookup-changes" }

// Request is the subject a worker's request of command goes to (the
// channel's request op, through workerd): any responder of the
// conductor side answers it (okanjo's sendRequestToMaster).
func (s Space) Request(command string) string { return s.prefix() + ".requests." + command }

// Requests matches every command's subject.
func (s Space) Requests() string { return s.Request("*") }

// RequestAs is Request for the holder of host credential id: its
// account's import maps its workers' requests there, so that a responder
// knows whose they are.
func (s Space) RequestAs(id, command string) string {
	return s.prefix() + ".as." + id + ".requests." + command
}

// ParseRequest returns the command of a subject of Request or RequestAs,
// and the credential id of the latter; ok false for any other.
func (s Space) ParseRequest(subj string) (cred, command string, ok bool) {
	rest, found := strings.CutPrefix(subj, s.prefix()+".")
	if !found {
		return "", "", false
	}
	if id, r, as := strings.Cut(strings.TrimPrefix(rest, "as."), ".requests."); strings.HasPrefix(rest, "as.") && as {
		return id, r, Token("credential", id) == nil && Token("command", r) == nil
	}
	command, found = strings.CutPrefix(rest, "requests.")
	return "", command, found && Token("command", command) == nil
}

// LookupAs is the lookup service's prefix for the holder of host
// credential id: its account's import maps its requests on
// LookupService's subjects there, so that the service knows whose they
// are.
func (s Space) LookupAs(id string) string { return s.prefix() + ".as." + id + ".lookup" }

// LookupCallers is LookupAs of every credential: the pattern
// lookup.WithCallers serves.
func (s Space) LookupCallers() string { return s.LookupAs("*") }

// ParseAs returns the credential id and the rest of a subject built by
// one of the As functions ("submit.<type>", "job", "consumers.<type>",
// "cancels"), or "", "".
func (s Space) ParseAs(subj string) (id, rest string) {
	after, ok := strings.CutPrefix(subj, s.prefix()+".as.")
	if !ok {
		return "", ""
	}
	id, rest, ok = strings.Cut(after, ".")
	if !ok || Token("credential id", id) != nil {
		return "", ""
	}
	return id, rest
}

// Submits matches Submit of every type.
func (s Space) Submits() string { return s.prefix() + ".submit.*" }

// SubmitTypeOf returns the job type of a subject built by Submit, or "".
func (s Space) SubmitTypeOf(subj string) string {
	typ, _ := strings.CutPrefix(subj, s.prefix()+".submit.")
	if typ == subj {
		return ""
	}
	return typ
}

// JobEvent is the subject the end of an attempt of a job of type typ is
// announced on, status being how it ended (succeeded, failed or dead).
func (s Space) JobEvent(typ, status string) string {
	return s.prefix() + ".events.job." + typ + "." + status
}

// JobEvents matches JobEvent of every type and status.
func (s Space) JobEvents() string { return s.prefix() + ".events.job.*.*" }

// ParseJobEvent returns the type and status of a subject built by JobEvent.
func (s Space) ParseJobEvent(subj string) (typ, status string, ok bool) {
	p := s.prefix() + ".events.job."
	if !strings.HasPrefix(subj, p) {
		return "", "", false
	}
	typ, status, ok = strings.Cut(subj[len(p):], ".")
	return typ, status, ok && typ != "" && status != ""
}

// JobEnds is the subject workerd tells conductord on how the attempts of a
// burst of jobs of type typ ended (see wire.Ends).
func (s Space) JobEnds(typ string) string { return s.prefix() + ".ends." + typ }

// AllJobEnds matches JobEnds of every type.
func (s Space) AllJobEnds() string { return s.prefix() + ".ends.*" }

// EndsAs is the subject the ends of job type typ a host on credential id
// publishes (on JobEnds, in its own account) come to conductord on: its
// account's import names the credential, so that conductord knows whose
// they are.
func (s Space) EndsAs(id, typ string) string { return s.prefix() + ".as." + id + ".ends." + typ }

// AllEndsAs matches EndsAs of every credential and type.
func (s Space) AllEndsAs() string { return s.prefix() + ".as.*.ends.*" }

// JobEndsTypeOf returns the job type of a subject built by JobEnds or
// EndsAs, or "" if it is not one, or its type is not a valid token.
func (s Space) JobEndsTypeOf(subj string) string {
	_, typ := s.ParseEnds(subj)
	return typ
}

// ParseEnds returns the credential id ("" for JobEnds) and the job type of
// a subject built by JobEnds or EndsAs; "", "" if it is neither.
func (s Space) ParseEnds(subj string) (id, typ string) {
	typ, ok := strings.CutPrefix(subj, s.prefix()+".ends.")
	if !ok {
		var rest string
		if id, rest = s.ParseAs(subj); id == "" {
			return "", ""
		}
		if typ, ok = strings.CutPrefix(rest, "ends."); !ok {
			return "", ""
		}
	}
	if Token("job type", typ) != nil {
		return "", ""
	}
	return id, typ
}

// Host is the subject host announces its heartbeat on.
func (s Space) Host(host string) string { return s.prefix() + ".hosts." + host }

// Hosts matches Host of every host.
func (s Space) Hosts() string { return s.prefix() + ".hosts.*" }

// HostOf returns the host of a subject built by Host, or "" if it is not
// one or its host is not a valid token.
func (s Space) HostOf(subj string) string {
	host, ok := strings.CutPrefix(subj, s.prefix()+".hosts.")
	if !ok || Token("host", host) != nil {
		return ""
	}
	return host
}

// Control is the subject workerd host takes commands on (request/reply).
func (s Space) Control(host string) string { return s.prefix() + ".control." + host }

// WorkerEvent is the subject a worker event of kind (see wire.Event) in pool
// is announced on.
func (s Space) WorkerEvent(pool, kind string) string {
	return s.prefix() + ".events.worker." + pool + "." + kind
}

// PoolEvent is the subject a pool event of kind in pool is announced on.
func (s Space) PoolEvent(pool, kind string) string {
	return s.prefix() + ".events.pool." + pool + "." + kind
}

// WorkerEvents matches every WorkerEvent.
func (s Space) WorkerEvents() string { return s.prefix() + ".events.worker.>" }

// PoolEvents matches every PoolEvent.
func (s Space) PoolEvents() string { return s.prefix() + ".events.pool.>" }

// StatsEvent is the subject conductord publishes each roll-up of the
// workers' counters on (docs/stats.md).
func (s Space) StatsEvent() string { return s.prefix() + ".events.stats" }

// Logs is the subject the output lines of pool's workers on host go to.
func (s Space) Logs(host, pool string) string { return s.prefix() + ".logs." + host + "." + pool }

// AllLogs matches Logs of every host and pool.
func (s Space) AllLogs() string { return s.prefix() + ".logs.*.*" }

// ParseLogs returns the host and pool of a subject built by Logs, or "",
// "" if subj is not one or either is not a valid token.
func (s Space) ParseLogs(subj string) (host, pool string) {
	rest, ok := strings.CutPrefix(subj, s.prefix()+".logs.")
	if !ok {
		return "", ""
	}
	host, pool, ok = strings.Cut(rest, ".")
	if !ok || Token("host", host) != nil || Token("pool", pool) != nil {
		return "", ""
	}
	return host, pool
}

// LogTail is the subject workerd host answers on, by request
// (wire.LogTailRequest), with the last lines it kept of a pool's output
// (wire.LogTail). Like Control, only the host may take it, and it answers
// on a ControlReply subject only.
func (s Space) LogTail(host string) string { return s.prefix() + ".tail." + host }

// LogTails matches LogTail of every host.
func (s Space) LogTails() string { return s.LogTail("*") }

// JobStream is the name of the JetStream stream holding queued jobs.
func (s Space) JobStream() string { return Root + "-" + s.ns + "-jobs" }

// StateBucket is the name of the key-value bucket holding job states, keyed
// by job id.
func (s Space) StateBucket() string { return Root + "-" + s.ns + "-state" }

// PayloadBucket is the name of the object store bucket that holds the
// payloads passed by reference, an object a payload (wire.PayloadRef).
func (s Space) PayloadBucket() string { return Root + "-" + s.ns + "-payloads" }

// DeadBucket is the name of the key-value bucket that indexes dead jobs,
// keyed by id: each holds the job's dead state (with its payload) until it
// is re-queued.
func (s Space) DeadBucket() string { return Root + "-" + s.ns + "-dead" }

// CancelBucket is the name of the key-value bucket of cancelled job ids
// (TTL = the state retention): every workerd watches it, so that a cancel
// reaches a job whether it is queued, on its way to a worker, or running.
func (s Space) CancelBucket() string { return Root + "-" + s.ns + "-cancel" }

// BatchBucket is the name of the key-value bucket of batches, keyed by
// batch id (TTL = the state retention).
func (s Space) BatchBucket() string { return Root + "-" + s.ns + "-batches" }

// BatchEvent is the subject the end of batch id is announced on, once.
func (s Space) BatchEvent(id string) string { return s.prefix() + ".events.batch." + id + ".end" }

// EndsStream is the name of the JetStream stream that holds the job ends
// (JobEnds of every type) until conductord has taken them: their counts,
// and the final states it archives.
func (s Space) EndsStream() string { return Root + "-" + s.ns + "-ends" }

// EndsConsumer is the name of conductord's durable consumer of EndsStream.
const EndsConsumer = "conductord"

// ArchiveGet is the subject conductord answers, by request, the archived
// state of a job, its id the request's body: a job that ended longer ago
// than its state is kept in StateBucket.
func (s Space) ArchiveGet() string { return s.prefix() + ".archive.get" }

// ArchivePeers is the subject on which a conductord, asked for an archived
// state it does not hold, asks the namespace's other conductords: each
// archives the ends it took and the final states its hosts' store wrote.
// A peer answers only with the state, or with an error; silence is "not
// here".
func (s Space) ArchivePeers() string { return s.prefix() + ".archive.peers" }

// StatsBucket is the name of the key-value bucket holding per-type counters.
func (s Space) StatsBucket() string { return Root + "-" + s.ns + "-stats" }

// LeaderBucket is the name of the key-value bucket through which the
// namespace's conductords elect the one that does what must happen once
// (LeaderKey), and tell each other they are alive (MemberKey).
func (s Space) LeaderBucket() string { return Root + "-" + s.ns + "-leader" }

// LeaderKey is the key of LeaderBucket the leader holds.
const LeaderKey = "leader"

// MemberKey is the key of LeaderBucket under which conductord id says it
// is alive.
func MemberKey(id string) string { return "member." + id }

// Consumer is the name of the durable pull consumer that every host serving
// job type typ shares.
func (s Space) Consumer(typ string) string { return "pool-" + typ }

// ConsumerAt is the name of the durable pull consumer of the jobs of type
// typ and priority prio: Consumer(typ) for normal jobs, "high-<type>" and
// "low-<type>" for the others (no job type can make one name another's).
func (s Space) ConsumerAt(typ, prio string) string {
	if prio == "" || prio == "normal" {
		return s.Consumer(typ)
	}
	return prio + "-" + typ
}

// ParseConsumer returns the job type and priority of a consumer named by
// ConsumerAt, or "", "".
func (s Space) ParseConsumer(name string) (typ, prio string) {
	prio, typ, _ = strings.Cut(name, "-")
	switch {
	case Token("job type", typ) != nil:
		return "", ""
	case prio == "pool":
		return typ, "normal"
	case prio == "high" || prio == "low":
		return typ, prio
	}
	return "", ""
}

// KV is the subject a key-value put to key in bucket is published on. It lets
// a writer pipeline puts with asynchronous publishes.
func KV(bucket, key string) string { return "$KV." + bucket + "." + key }

func (s Space) prefix() string { return Root + "." + s.ns }
