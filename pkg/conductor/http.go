package conductor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/console"
	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/version"
	"github.com/conductor-run/conductor/internal/wire"
	"github.com/conductor-run/conductor/pkg/client"
)

// MaxWait bounds the ?wait= of a job submission.
const MaxWait = 10 * time.Minute

// The pool states that poolState gives a meaning to.
const (
	poolRunning  = "running"
	poolDraining = "draining"
	poolDrained  = "drained"
	poolFailed   = "failed"
	poolBackoff  = "backoff"
)

// poolState sums up the states of a pool on its hosts: failed if any host's
// pool failed; else backoff if any host's pool has no worker up and waits
// to restart them; else the state they all share, if they do; else
// draining if each is draining or drained; else running.
func poolState(hosts []client.PoolHost) string {
	if len(hosts) == 0 {
		return ""
	}
	if slices.ContainsFunc(hosts, func(h client.PoolHost) bool { return h.State == poolFailed }) {
		return poolFailed
	}
	if slices.ContainsFunc(hosts, func(h client.PoolHost) bool { return h.State == poolBackoff }) {
		return poolBackoff
	}
	same, draining := true, true
	for _, h := range hosts {
		same = same && h.State == hosts[0].State
		draining = draining && (h.State == poolDraining || h.State == poolDrained)
	}
	switch {
	case same:
		return hosts[0].State
	case draining:
		return poolDraining
	default:
		return poolRunning
	}
}

// poolReason is the reason of a pool in state: that of the first host
// whose pool is in state and has one, prefixed with the host.
func poolReason(state string, hosts []client.PoolHost) string {
	for _, h := range hosts {
		if h.State == state && h.Reason != "" {
			return h.Host + ": " + h.Reason
		}
	}
	return ""
}

// Handler is the HTTP API (docs/api.md). GET / and GET /healthz are open;
// everything else needs the token when one is set. Every request passes
// the guard first: a Host that is not one of the server's names, or a
// state-changing request from another origin, is refused (http_guard.go).
// Served on a listener of the caller's (no Config.HTTPListen), its names
// are localhost, 127.0.0.1, ::1, the hostname and Config.HTTPHosts.
func (c *Conductor) Handler() http.Handler {
	mux := http.NewServeMux()
	// The console's page and its assets (internal/console): open, like
	// /healthz; what they show comes from the /v1/ routes, token and all.
	page := console.Handler()
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /console/", page)
	mux.HandleFunc("GET /healthz", c.healthz)
	// The least role of each route (http_access.go); the routes of a job
	// type check the caller's types too.
	sub, op := auth.Submitter, auth.Operator
	mux.Handle("POST /v1/jobs/{type}", c.auth(sub, c.submitJob))
	mux.Handle("GET /v1/jobs/{id}", c.auth(sub, c.getJob))
	mux.Handle("GET /v1/jobs", c.auth(sub, c.listJobs))
	mux.Handle("POST /v1/jobs/{id}/retry", c.auth(op, c.retryJob))
	mux.Handle("POST /v1/jobs/{id}/cancel", c.auth(sub, c.cancelJob))
	mux.Handle("POST /v1/batches/{type}", c.auth(sub, limit(make(chan struct{}, c.cfg.MaxBatchReads), "batches being read", c.submitBatch)))
	mux.Handle("GET /v1/batches/{id}", c.auth(sub, c.getBatch))
	mux.Handle("POST /v1/batches/{id}/abort", c.auth(op, c.abortBatch))
	mux.Handle("GET /v1/pools", c.auth(op, c.listPools))
	mux.Handle("GET /v1/workers", c.auth(op, c.listWorkers))
	mux.Handle("GET /v1/hosts", c.auth(op, c.listHosts))
	mux.Handle("GET /v1/version", c.auth(sub, c.getVersion))
	mux.Handle("GET /v1/leader", c.auth(sub, c.getLeader))
	mux.Handle("GET /v1/stats", c.auth(op, c.getStats))
	for _, o := range wire.CommandOps {
		mux.Handle("POST /v1/pools/{name}/"+o, c.auth(op, c.poolCommand(client.PoolOp(o))))
	}
	mux.Handle("POST /v1/workers/{host}/{pool}/{index}/message", c.auth(op, c.sendMessage))
	mux.Handle("POST /v1/pools/{name}/broadcast", c.auth(op, c.broadcast))
	mux.Handle("GET /v1/lookups/{name}", c.auth(op, c.getLookupKeys))
	mux.Handle("GET /v1/lookups/{name}/{key...}", c.auth(op, c.getLookup))
	mux.Handle("PUT /v1/lookups/{name}/{key...}", c.auth(op, c.putLookup))
	mux.Handle("DELETE /v1/lookups/{name}/{key...}", c.auth(op, c.deleteLookup))
	// The event and log streams share one bound (stream.go).
	streams := make(chan struct{}, c.cfg.MaxEventStreams)
	mux.Handle("GET /v1/events", c.auth(op, limit(streams, "event and log streams", c.streamEvents)))
	mux.Handle("GET /v1/pools/{name}/logs", c.auth(op, limit(streams, "event and log streams", c.streamLogs)))
	mux.Handle("GET /v1/console/stream", c.auth(op, limit(make(chan struct{}, c.cfg.MaxConsoleStreams), "console streams", c.streamConsole)))
	if c.cfg.Metrics != nil {
		mux.Handle("GET /metrics", c.auth(op, c.cfg.Metrics.ServeHTTP))
	}
	return c.guard(mux)
}

// health is GET /healthz's answer.
type health struct {
	// Status is "ok", "degraded" (working, with storage damage to see
	// to), or, with 503, "unavailable" (no NATS) or the storage's state
	// ("full", "failed").
	Status  string         `json:"status"`
	Error   string         `json:"error,omitempty"`
	Storage *StorageStatus `json:"storage,omitempty"`
}

// healthz answers 200 while conductord can queue jobs and store their
// states, and 503 with the reason when it cannot.
func (c *Conductor) healthz(w http.ResponseWriter, r *http.Request) {
	if !c.nc.IsConnected() {
		writeJSON(w, http.StatusServiceUnavailable, health{Status: "unavailable", Error: "not connected to NATS"})
		return
	}
	st := c.storageNow(r.Context())
	h := health{Status: string(st.State), Storage: &st}
	if c.storage == nil {
		h.Storage = nil
	}
	code := http.StatusOK
	if st.State == StorageFull || st.State == StorageFailed {
		code, h.Error = http.StatusServiceUnavailable, "storage "+string(st.State)+": "+st.Reason
	}
	writeJSON(w, code, h)
}

// refuseFull answers 503 with the reason if the store cannot take new
// jobs, so that the caller learns why rather than JetStream's "maximum
// bytes exceeded"; it reports whether it did.
func (c *Conductor) refuseFull(w http.ResponseWriter) bool {
	msg := c.fullError()
	if msg == "" {
		return false
	}
	writeError(w, http.StatusServiceUnavailable, msg)
	return true
}

// fullError is the error of a submission refused because the store cannot
// take new jobs, or "" if it can: refused before its queued state is
// written, a refusal writes nothing to a full disk.
func (c *Conductor) fullError() string {
	st := c.Storage()
	if st.State != StorageFull && st.State != StorageFailed {
		return ""
	}
	return "storage " + string(st.State) + ": " + st.Reason + "; nothing was queued"
}

func (c *Conductor) submitJob(w http.ResponseWriter, r *http.Request) {
	if !mayType(w, r, r.PathValue("type")) || c.refuseFull(w) {
		return
	}
	if r.ContentLength > int64(c.cfg.MaxPayload) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("payload is over the limit of %d bytes", c.cfg.MaxPayload))
		return
	}
	// A body that trickles in is cut off: it holds a connection, and a
	// large one its share of the large bodies' budget.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(batchReadTimeout))
	body := c.largeBodies.reader(r.Body, c.inlinePayload())
	defer body.release()
	data, err := io.ReadAll(io.LimitReader(body, int64(c.cfg.MaxPayload)+1))
	switch {
	case errors.Is(err, errBodyBudget):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many large payloads are being submitted at once; retry later")
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	q := r.URL.Query()
	code, answer := c.submit(r.Context(), submission{
		typ: r.PathValue("type"), payload: data, key: r.Header.Get(names.HeaderIdempotencyKey), onBehalfOf: caller(r).cred.ID,
		wait: q.Get("wait"), timeout: q.Get("timeout"), maxAttempts: q.Get("max_attempts"), delay: q.Get("delay"),
		priority: q.Get("priority"), queued: body.release,
	})
	writeJSON(w, code, answer)
}

func (c *Conductor) getJob(w http.ResponseWriter, r *http.Request) {
	j, err := c.client.Job(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, client.ErrJobNotFound), err == nil && !seesType(r, j.Type):
		writeError(w, http.StatusNotFound, "no job "+r.PathValue("id"))
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, j)
	}
}

// listWorkers serves GET /v1/workers: the workers of the live hosts,
// then those of the hosts lost lately, each in state lost.
func (c *Conductor) listWorkers(w http.ResponseWriter, _ *http.Request) {
	out := c.Workers()
	for _, h := range c.lostHosts() {
		out = append(out, h.Workers...)
	}
	writeJSON(w, http.StatusOK, out)
}

// listHosts serves GET /v1/hosts: the live hosts, then those lost lately
// (client.LostHosts), the most recently lost first, each with lost set.
func (c *Conductor) listHosts(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, append(c.liveHosts(), c.lostHosts()...))
}

// getVersion serves GET /v1/version: conductord's build.
func (c *Conductor) getVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, version.Get())
}

// Workers lists every worker process of every live host, as heard so far.
func (c *Conductor) Workers() []client.Worker {
	out := []client.Worker{}
	for _, h := range c.liveHosts() {
		out = append(out, h.Workers...)
	}
	return out
}

// liveHosts returns the hosts the conductor's client has heard so far,
// sorted by host id, each with the pools and workers of the types its
// credential allows only: a heartbeat may name any pool, and another
// type's pool it names would count in that pool's hosts, state, workers,
// held jobs and run times.
func (c *Conductor) liveHosts() []client.Host { return c.ownTypes(c.client.HeardHosts()) }

// lostHosts returns the hosts lost lately (client.LostHosts), each with
// the pools and workers of the types its credential allows only.
func (c *Conductor) lostHosts() []client.Host { return c.ownTypes(c.client.LostHosts()) }

// ownTypes keeps, of each of hosts, the pools and workers of the types its
// credential allows.
func (c *Conductor) ownTypes(hosts []client.Host) []client.Host {
	types := c.access.hostTypes()
	for i, h := range hosts {
		may, ok := types[h.Host]
		if !ok || may[anyType] {
			continue
		}
		hosts[i].Pools = slices.DeleteFunc(slices.Clone(h.Pools), func(p client.HostPool) bool { return !may[p.Name] })
		hosts[i].Workers = slices.DeleteFunc(slices.Clone(h.Workers), func(w client.Worker) bool { return !may[w.Pool] })
	}
	return hosts
}

// Hosts returns the live hosts as conductord counts them (liveHosts):
// what /metrics reads.
func (c *Conductor) Hosts() []client.Host { return c.liveHosts() }

func (c *Conductor) listPools(w http.ResponseWriter, r *http.Request) {
	pools, err := c.Pools(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, pools)
}

// Pools returns the view of every job type that has queued jobs, counters,
// a consumer, workers or a host that runs it, sorted by type.
func (c *Conductor) Pools(ctx context.Context) ([]client.Pool, error) {
	byType := map[string]*client.Pool{}
	pool := func(typ string) *client.Pool {
		p := byType[typ]
		if p == nil {
			p = &client.Pool{Type: typ}
			byType[typ] = p
		}
		return p
	}
	stream, info, err := c.jobStream(ctx)
	if err != nil {
		return nil, err
	}
	// The stream holds the jobs queued and running; the consumers know the
	// running ones, per priority.
	type key struct {
		typ  string
		prio client.Priority
	}
	inStream := map[key]int64{}
	for subj, n := range info.State.Subjects {
		if typ, prio := c.space.ParseJob(subj); typ != "" {
			inStream[key{typ, client.Priority(prio)}] = int64(n)
		}
	}
	consumers := stream.ListConsumers(ctx)
	running := map[key]int64{}
	for ci := range consumers.Info() {
		if typ, prio := c.space.ParseConsumer(ci.Name); typ != "" {
			running[key{typ, client.Priority(prio)}] = int64(ci.NumAckPending)
		}
	}
	for k, n := range inStream {
		p := pool(k.typ)
		queued := max(n-running[k], 0)
		p.Queued += queued
		if p.QueuedByPriority == nil {
			p.QueuedByPriority = map[client.Priority]int64{}
		}
		p.QueuedByPriority[k.prio] += queued
	}
	for k, n := range running {
		pool(k.typ).Running += n
	}
	for _, p := range byType {
		if p.QueuedByPriority[client.PriorityHigh]+p.QueuedByPriority[client.PriorityLow] == 0 {
			p.QueuedByPriority = nil
		}
	}
	if err := consumers.Err(); err != nil {
		return nil, fmt.Errorf("read job consumers: %w", err)
	}
	for typ, n := range c.stats.current(ctx, c.lead.leading()) {
		p := pool(typ)
		p.Succeeded, p.Failed, p.Dead, p.Superseded = n.Succeeded, n.Failed, n.Dead, n.Superseded
	}
	for _, hb := range c.liveHosts() {
		for _, w := range hb.Workers {
			if w.PID != 0 { // a slot waiting to restart has no process
				pool(w.Pool).Workers++
			}
		}
		for _, pi := range hb.Pools {
			p := pool(pi.Name)
			p.Held += int64(pi.Held)
			p.Hosts = append(p.Hosts, client.PoolHost{
				Host: hb.Host, State: pi.State, Count: pi.Count, Operation: pi.Operation,
				Cmd: pi.Cmd, RetryAt: pi.RetryAt, Error: pi.Error, Reason: pi.Reason, Held: pi.Held,
			})
		}
	}
	out := make([]client.Pool, 0, len(byType))
	for _, p := range byType {
		// The consumers count every job delivered and not acked: those the
		// hosts hold ahead are not running. The two are read at different
		// times (the heartbeats are up to a second old): neither goes below
		// zero, and a job counts in one of them only.
		p.Held = min(p.Held, p.Running)
		p.Running -= p.Held
		p.State = poolState(p.Hosts)
		p.Reason = poolReason(p.State, p.Hosts)
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b client.Pool) int { return strings.Compare(a.Type, b.Type) })
	return out, nil
}

// writeJSON answers code and v as compact JSON, one line: never indented,
// so that an answer is as large as what it holds (indenting a value nested
// n deep grows it with n squared), and valid UTF-8, whatever a worker or
// a publisher stored (see validJSON).
func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		code, data = http.StatusInternalServerError, []byte(`{"error":"encode the answer: `+jsonEscape(err.Error())+`"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(validJSON(data), '\n'))
}

// validJSON returns data, JSON, as valid UTF-8: each run of invalid bytes
// is replaced with U+FFFD. encoding/json makes strings valid, but copies a
// json.RawMessage (a result, a payload, a worker's message) as it is; in
// JSON, bytes that are not ASCII are only found inside strings, so the
// replacement keeps it JSON.
func validJSON(data []byte) []byte {
	if utf8.Valid(data) {
		return data
	}
	return bytes.ToValidUTF8(data, []byte("\uFFFD"))
}

// jsonEscape is s as the inside of a JSON string.
func jsonEscape(s string) string {
	q, _ := json.Marshal(s) // a string always encodes
	return string(q[1 : len(q)-1])
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// listJobs serves GET /v1/jobs?status=S[,S][&type=T][&limit=N][&before=TIME]:
// it reads the query's strings, and Client.Jobs checks the values.
func (c *Conductor) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var jq client.JobQuery
	for _, s := range q["status"] {
		if s == "" {
			continue // status= is every status
		}
		for st := range strings.SplitSeq(s, ",") {
			jq.Status = append(jq.Status, client.Status(st))
		}
	}
	jq.Type = q.Get("type")
	if p := caller(r); len(p.cred.Types) > 0 && jq.Type == "" {
		writeError(w, http.StatusForbidden, fmt.Sprintf("credential %s may list jobs of its types only: give ?type=", p.cred.ID))
		return
	}
	if jq.Type != "" && !mayType(w, r, jq.Type) {
		return
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > client.MaxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad limit %q: want 1 to %d", s, client.MaxListLimit))
			return
		}
		jq.Limit = n
	}
	if s := q.Get("before"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("bad before %q: want an RFC 3339 time such as 2026-11-23T10:00:00.123456789Z (the updated_at of the last job listed)", s))
			return
		}
		jq.Before = t
	}
	jobs, err := c.client.Jobs(r.Context(), jq)
	switch {
	case errors.Is(err, client.ErrBadQuery):
		writeError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, jobs)
	}
}

// retryJob serves POST /v1/jobs/{id}/retry: a dead job is queued again.
func (c *Conductor) retryJob(w http.ResponseWriter, r *http.Request) {
	j, err := c.client.Requeue(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, client.ErrJobNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, client.ErrNotDead):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		c.log.Info("dead job re-queued", "job", j.ID, "type", j.Type)
		writeJSON(w, http.StatusOK, j)
	}
}

// cancelJob serves POST /v1/jobs/{id}/cancel.
func (c *Conductor) cancelJob(w http.ResponseWriter, r *http.Request) {
	if p := caller(r); len(p.cred.Types) > 0 {
		// A submitter cancels only jobs of its types: one of another
		// type is not found, as GET /v1/jobs/{id} answers.
		j, err := c.client.Job(r.Context(), r.PathValue("id"))
		if err == nil && !seesType(r, j.Type) {
			err = client.ErrJobNotFound
		}
		if errors.Is(err, client.ErrJobNotFound) {
			writeError(w, http.StatusNotFound, "no job "+r.PathValue("id"))
			return
		}
	}
	j, err := c.client.Cancel(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, client.ErrJobNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, client.ErrJobEnded):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		c.log.Info("job cancelled", "job", j.ID, "type", j.Type, "was", j.Status)
		writeJSON(w, http.StatusAccepted, j)
	}
}

// submitBatch serves POST /v1/batches/{type}: one JSON payload per line.
func (c *Conductor) submitBatch(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if err := subject.Token("job type", typ); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !mayType(w, r, typ) || c.refuseFull(w) {
		return
	}
	if err := c.types.admit(typ); err != nil {
		writeError(w, http.StatusBadRequest, err.Error()+"; nothing was queued")
		return
	}
	// The body is read whole before anything is queued: its bytes are
	// bounded, by --max-batch-bytes and by what the most jobs of the most
	// bytes each take.
	limit := min(c.cfg.MaxBatchBytes, int64(client.MaxBatchJobs)*int64(c.cfg.MaxPayload+1))
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(batchReadTimeout))
	payloads, err := parseLines(http.MaxBytesReader(w, r.Body, limit), c.cfg.MaxPayload)
	if _, over := errors.AsType[*http.MaxBytesError](err); over {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
			"body is over the limit of %d bytes (conductord --max-batch-bytes); nothing was queued: split it into several batches", limit))
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error()+"; nothing was queued")
		return
	}
	prio, err := client.ParsePriority(r.URL.Query().Get("priority"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error()+"; nothing was queued")
		return
	}
	opts := []client.SubmitOption{client.WithPriority(prio)}
	if id := caller(r).cred.ID; id != "" {
		opts = append(opts, client.OnBehalfOf(id))
	}
	if key := r.Header.Get(names.HeaderIdempotencyKey); key != "" {
		opts = append(opts, client.WithIdempotencyKey(key))
	}
	b, err := c.client.SubmitBatch(r.Context(), typ, payloads, opts...)
	switch {
	case errors.Is(err, client.ErrBatchMismatch):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	c.log.Info("batch queued", "batch", b.ID, "type", typ, "total", b.Total)
	writeJSON(w, http.StatusAccepted, b)
}

// abortBatch serves POST /v1/batches/{id}/abort: every job of the batch
// that has not ended is cancelled (client.AbortBatch).
func (c *Conductor) abortBatch(w http.ResponseWriter, r *http.Request) {
	res, err := c.client.AbortBatch(r.Context(), r.PathValue("id"))
	c.log.Info("batch abort", "batch", r.PathValue("id"), "err", err)
	switch {
	case errors.Is(err, client.ErrBatchNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// getBatch serves GET /v1/batches/{id}.
func (c *Conductor) getBatch(w http.ResponseWriter, r *http.Request) {
	b, err := c.client.Batch(r.Context(), r.PathValue("id"))
	switch {
	case errors.Is(err, client.ErrBatchNotFound), err == nil && !seesType(r, b.Type):
		// One of a type the caller may not see is not found either.
		writeError(w, http.StatusNotFound, client.ErrBatchNotFound.Error())
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		writeJSON(w, http.StatusOK, b)
	}
}
