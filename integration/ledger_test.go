package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// ledger is what careful clients of the chaos run did and were told: the
// id each squares job i got when it was queued, and the state Wait
// returned when it ended.
type ledger struct {
	ids      []string
	waited   []*client.Job
	queued   atomic.Int64 // jobs queued (their Submit returned an id)
	ended    atomic.Int64 // jobs whose Wait returned an end
	retries  atomic.Int64 // Submit and Wait calls that failed and were made again
	cut      atomic.Int64 // Wait calls cut by waitCall (see TestClient_ReadInFlightAtConductordKill)
	errMu    sync.Mutex
	firstErr error // the first error that is not a restart's (guarded by errMu)
}

func newLedger(n int) *ledger {
	return &ledger{ids: make([]string, n), waited: make([]*client.Job, n)}
}

func (l *ledger) fail(err error) {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if l.firstErr == nil {
		l.firstErr = err
	}
}

func (l *ledger) err() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.firstErr
}

// retryPause is how long a careful client waits before it calls again
// after a failure (conductord restarting).
const retryPause = 50 * time.Millisecond

// submit queues job i until it is queued, with an idempotency key so that
// the repeats are one job, and returns its id ("" if ctx ended first).
func (l *ledger) submit(ctx context.Context, cl *client.Client, i int) string {
	for {
		id, err := cl.Submit(ctx, "squares", i, client.WithIdempotencyKey("chaos-"+strconv.Itoa(i)), client.WithPriority(chaosPriority(i)))
		if err == nil {
			l.ids[i] = id
			l.queued.Add(1)
			return id
		}
		if errors.Is(err, client.ErrBadPayload) {
			l.fail(fmt.Errorf("submit job %d: %w", i, err))
			return ""
		}
		l.retries.Add(1)
		select {
		case <-time.After(retryPause):
		case <-ctx.Done():
			l.fail(fmt.Errorf("submit job %d: %w (last error: %v)", i, ctx.Err(), err))
			return ""
		}
	}
}

// chaosPriority is job i's priority: one in 10 high and one in 10 low, so
// that the run makes the type's high and low consumers as their first
// jobs come (conductord's leader, pkg/conductor/priorities.go) under its
// faults, and the hosts find them while they probe.
func chaosPriority(i int) client.Priority {
	switch i % 10 {
	case 3:
		return client.PriorityHigh
	case 7:
		return client.PriorityLow
	}
	return client.PriorityNormal
}

// waitCall bounds one Wait call of a careful client, as a safety net: Wait
// bounds its own reads now (a read in flight when conductord died used to
// hang: TestClient_ReadInFlightAtConductordKill), so a cut call counts
// against the run's figures. It is well over the longest a job waits for
// a worker in the run (a stop's length).
const waitCall = 45 * time.Second

// wait waits for job i to end, calling Wait again when it fails (a
// conductord restart cuts the reads) or takes over waitCall, and records
// the state it returns.
func (l *ledger) wait(ctx context.Context, cl *client.Client, i int) {
	id := l.ids[i]
	for {
		cctx, cancel := context.WithTimeout(ctx, waitCall)
		j, err := cl.Wait(cctx, id)
		cancel()
		if err == nil {
			l.waited[i] = j
			l.ended.Add(1)
			return
		}
		if ctx.Err() != nil {
			l.fail(fmt.Errorf("wait for job %d (%s): %w", i, id, ctx.Err()))
			return
		}
		if errors.Is(err, context.DeadlineExceeded) {
			l.cut.Add(1)
		}
		l.retries.Add(1)
		select {
		case <-time.After(retryPause):
		case <-ctx.Done():
		}
	}
}

// check returns the first job whose Wait did not say it succeeded with
// i*i, and whether the ids are one per job.
func (l *ledger) check() error {
	seen := make(map[string]int, len(l.ids))
	for i, id := range l.ids {
		if prev, ok := seen[id]; ok {
			return fmt.Errorf("jobs %d and %d got the same id %s", prev, i, id)
		}
		seen[id] = i
		j := l.waited[i]
		if j == nil {
			return fmt.Errorf("job %d (%s) never ended as its submitter saw it", i, id)
		}
		if j.ID != id {
			return fmt.Errorf("job %d: Wait(%s) returned the state of job %s", i, id, j.ID)
		}
		if j.Status != client.StatusSucceeded {
			return fmt.Errorf("job %d (%s) ended %s: %s", i, id, j.Status, j.Error)
		}
		if want := strconv.Itoa(i * i); strings.TrimSpace(string(j.Result)) != want {
			return fmt.Errorf("job %d (%s): result %s, want %s (a result of another job?)", i, id, j.Result, want)
		}
	}
	return nil
}

// duplicates are the figures of the extra runs that at-least-once
// delivery allowed, read from the jobs' stored states.
type duplicates struct {
	jobs       int // jobs read
	retried    int // jobs with more than one attempt
	attempts   int // attempts in all
	lost       int // attempts marked "lost": true in the history
	superseded int // attempts marked "superseded": true: late outcomes fenced off
	changed    int // jobs whose state is no longer what Wait returned (status, result, error)
	grew       int // jobs whose history grew after Wait returned (late attempts recorded)
}

func (d duplicates) per100k(n int) float64 {
	if d.jobs == 0 {
		return 0
	}
	return float64(n) * 100_000 / float64(d.jobs)
}

func (d duplicates) String() string {
	return fmt.Sprintf("%d jobs: %d with more than one attempt (%.0f per 100k), %d attempts; %d lost, %d superseded (%.0f per 100k); %d changed after Wait, %d histories grew after Wait",
		d.jobs, d.retried, d.per100k(d.retried), d.attempts, d.lost, d.superseded, d.per100k(d.superseded), d.changed, d.grew)
}

// rawState is the part of a stored job state the checks read. The history
// is read generically, as maps, so that the check works whether or not
// the attempts carry "lost" and "superseded".
type rawState struct {
	ID       string           `json:"id"`
	Status   string           `json:"status"`
	Attempts int              `json:"attempts"`
	Result   json.RawMessage  `json:"result"`
	Error    string           `json:"error"`
	History  []map[string]any `json:"history"`
}

// reread reads every job's state from the state bucket again, with a few
// readers at once, and compares it with what Wait returned.
func (l *ledger) reread(ctx context.Context, cl *client.Client) (duplicates, error) {
	space, err := subject.New(cl.Config().Namespace)
	if err != nil {
		return duplicates{}, err
	}
	js, err := jetstream.New(cl.Conn())
	if err != nil {
		return duplicates{}, err
	}
	kv, err := js.KeyValue(ctx, space.StateBucket())
	if err != nil {
		return duplicates{}, fmt.Errorf("open the state bucket: %w", err)
	}
	states := make([]*rawState, len(l.ids))
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(l.ids) {
					return
				}
				raw, err := stateOf(ctx, kv, cl, l.ids[i])
				if err != nil {
					errs <- fmt.Errorf("read job %d (%s): %w", i, l.ids[i], err)
					return
				}
				var s rawState
				if err := json.Unmarshal(raw, &s); err != nil {
					errs <- fmt.Errorf("decode job %d: %w: %s", i, err, raw)
					return
				}
				states[i] = &s
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return duplicates{}, err
	}
	var d duplicates
	var firstChange error
	for i, s := range states {
		w := l.waited[i]
		d.jobs++
		d.attempts += s.Attempts
		if s.Attempts > 1 {
			d.retried++
		}
		for _, a := range s.History {
			if a["lost"] == true {
				d.lost++
			}
			if a["superseded"] == true {
				d.superseded++
			}
		}
		if s.Status != string(w.Status) || string(s.Result) != string(w.Result) || s.Error != w.Error {
			d.changed++
			if firstChange == nil {
				firstChange = fmt.Errorf("job %d (%s) changed after Wait returned: now %s %s %q, Wait said %s %s %q",
					i, s.ID, s.Status, s.Result, s.Error, w.Status, w.Result, w.Error)
			}
		}
		if len(s.History) > len(w.History) {
			d.grew++
		}
	}
	return d, firstChange
}

// stateOf returns the stored state of job id as JSON: from the state
// bucket, or, for a final state moved to conductord's archive (after
// ArchiveAfter, an hour by default), as the Client reads it from there.
func stateOf(ctx context.Context, kv jetstream.KeyValue, cl *client.Client, id string) ([]byte, error) {
	e, err := kv.Get(ctx, id)
	if err == nil {
		return e.Value(), nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, err
	}
	j, err := cl.Job(ctx, id)
	if err != nil {
		return nil, err
	}
	return json.Marshal(j)
}
