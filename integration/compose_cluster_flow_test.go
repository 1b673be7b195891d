package integration

// The job flow of TestComposeCluster (compose_cluster_test.go): submitters
// on both conductords' HTTP APIs, and the checks of how the jobs ended.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// api is one conductord's HTTP API, safe for any goroutine: errors are
// returned, not failed.
type api struct {
	name, base, token string
}

var apiClient = &http.Client{Timeout: 30 * time.Second}

// call makes a request and decodes a 2xx JSON answer into out (a *string
// takes the body as it is).
func (a *api) call(ctx context.Context, method, path, body string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := apiClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, tail(raw, 300))
	}
	switch o := out.(type) {
	case nil:
	case *string:
		*o = string(raw)
	default:
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// submission is one job a conductord accepted (202).
type submission struct {
	id, via    string
	start, end time.Time
}

// flow submits jobs of one type steadily through every API: per API,
// perAPI submitters each submitting every interval (a submission that
// takes longer delays that submitter only).
type flow struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards the fields below
	subs    []submission
	refused int
	lastErr string
	changed chan struct{} // closed and replaced at every acceptance
}

func startFlow(apis []*api, typ string, perAPI int, every time.Duration) *flow {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flow{cancel: cancel, changed: make(chan struct{})}
	n := 0
	for _, a := range apis {
		for range perAPI {
			n++
			seq := n
			f.wg.Go(func() {
				tick := time.NewTicker(every)
				defer tick.Stop()
				for i := 0; ; i++ {
					f.submit(ctx, a, typ, seq*1_000_000+i)
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
				}
			})
		}
	}
	return f
}

func (f *flow) submit(ctx context.Context, a *api, typ string, n int) {
	var out struct{ ID string }
	start := time.Now()
	code, err := a.call(ctx, http.MethodPost, "/v1/jobs/"+typ, fmt.Sprint(n%1000), &out)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case ctx.Err() != nil: // stopped: not counted either way
	case err == nil && code == http.StatusAccepted && out.ID != "":
		f.subs = append(f.subs, submission{id: out.ID, via: a.name, start: start, end: time.Now()})
		close(f.changed)
		f.changed = make(chan struct{})
	default:
		f.refused++
		f.lastErr = fmt.Sprintf("%s: %d %v", a.name, code, err)
	}
}

// stop ends the submissions and waits for the submitters.
func (f *flow) stop() {
	f.cancel()
	f.wg.Wait()
}

func (f *flow) snapshot() ([]submission, chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.subs), f.changed
}

func (f *flow) accepted() []submission {
	s, _ := f.snapshot()
	return s
}

func (f *flow) result() ([]submission, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.subs), f.refused, f.lastErr
}

// waitFor waits until ok holds of the accepted submissions, at each
// acceptance, and returns them.
func (f *flow) waitFor(t *testing.T, limit time.Duration, what string, ok func([]submission) bool) []submission {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		subs, next := f.snapshot()
		if ok(subs) {
			return subs
		}
		select {
		case <-next:
		case <-deadline.C:
			_, refused, lastErr := f.result()
			t.Fatalf("%s: not within %s (%d accepted, %d refused, last: %s)", what, limit, len(subs), refused, lastErr)
		}
	}
}

// waitAccepted waits until n submissions in all were accepted.
func (f *flow) waitAccepted(t *testing.T, n int, limit time.Duration) {
	t.Helper()
	f.waitFor(t, limit, fmt.Sprintf("%d submissions accepted", n), func(s []submission) bool { return len(s) >= n })
}

// waitAcceptedAfter waits for the first accepted submission begun after at,
// and returns it.
func (f *flow) waitAcceptedAfter(t *testing.T, at time.Time, limit time.Duration) submission {
	t.Helper()
	after := func(s submission) bool { return s.start.After(at) }
	subs := f.waitFor(t, limit, "a submission accepted after "+at.Format(time.StampMilli), func(s []submission) bool {
		return slices.ContainsFunc(s, after)
	})
	first := subs[slices.IndexFunc(subs, after)]
	for _, s := range subs {
		if after(s) && s.end.Before(first.end) {
			first = s
		}
	}
	return first
}

// waitEnded reads the jobs of subs (each through the conductord that did
// not accept it, so that both are seen to share them) until every one has
// ended (succeeded or dead), and returns them by id.
func (cc *composeCluster) waitEnded(t *testing.T, subs []submission, limit time.Duration) map[string]client.Job {
	t.Helper()
	jobs := map[string]client.Job{}
	pending := map[string]client.Job{}
	waitUntil(t, limit, fmt.Sprintf("%d jobs end", len(subs)), func() (bool, string) {
		clear(pending)
		for i, s := range subs {
			if _, done := jobs[s.id]; done {
				continue
			}
			a := cc.apis[i%len(cc.apis)]
			if s.via == a.name {
				a = cc.apis[(i+1)%len(cc.apis)]
			}
			var j client.Job
			if _, err := a.call(context.Background(), http.MethodGet, "/v1/jobs/"+s.id, "", &j); err != nil {
				pending[s.id] = client.Job{ID: s.id, Error: err.Error()}
				continue
			}
			if j.Status == client.StatusSucceeded || j.Status == client.StatusDead {
				jobs[s.id] = j
			} else {
				pending[s.id] = j
			}
		}
		if len(pending) == 0 {
			return true, ""
		}
		var some []string
		for id, j := range pending {
			if len(some) < 5 {
				some = append(some, fmt.Sprintf("%s %s %s [%s]", id, j.Status, j.Error, historyString(j)))
			}
		}
		return false, fmt.Sprintf("%d pending, e.g. %s", len(pending), strings.Join(some, "; "))
	})
	return jobs
}

// checkEndedOnce checks that every job succeeded and that exactly one of
// its attempts counts (ended, neither lost nor superseded, no error), and
// returns how many jobs had more than one attempt.
func checkEndedOnce(t *testing.T, jobs map[string]client.Job) int {
	t.Helper()
	redone, shown := 0, 0
	for id, j := range jobs {
		require.Equal(t, client.StatusSucceeded, j.Status, "job %s: %s", id, historyString(j))
		counted := 0
		for _, a := range j.History {
			if !a.EndedAt.IsZero() && !a.Lost && !a.Superseded && a.Error == "" {
				counted++
			}
		}
		require.Equal(t, 1, counted, "job %s ended %d times: %s", id, counted, historyString(j))
		if len(j.History) > 1 {
			redone++
			if shown++; shown <= 5 {
				t.Logf("  more than one attempt: job %s (%s) history: %s", id, j.Type, historyString(j))
			}
		}
	}
	return redone
}

// attemptsOf counts host's attempts that were lost and superseded.
func attemptsOf(jobs map[string]client.Job, host string) (lost, superseded int) {
	for _, j := range jobs {
		for _, a := range j.History {
			if a.Host == host && a.Lost {
				lost++
			}
			if a.Host == host && a.Superseded {
				superseded++
			}
		}
	}
	return lost, superseded
}

func historyString(j client.Job) string {
	var parts []string
	for _, a := range j.History {
		s := fmt.Sprintf("#%d %s", a.Attempt, a.Host)
		if !a.EndedAt.IsZero() {
			s += fmt.Sprintf(" %.2fs", a.EndedAt.Sub(a.StartedAt).Seconds())
		}
		for _, flag := range []struct {
			set  bool
			name string
		}{{a.Lost, "lost"}, {a.Superseded, "superseded"}, {a.Crashed, "crashed"}, {a.Error != "", "error=" + a.Error}} {
			if flag.set {
				s += " " + flag.name
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// around returns, of the submissions through via, how long after at the
// first one begun after at was accepted, and the last of those under way
// at at.
func around(subs []submission, via string, at time.Time) (first, held time.Duration) {
	first = -1
	for _, s := range subs {
		switch {
		case s.via != via:
		case s.start.After(at):
			if d := s.end.Sub(at); first < 0 || d < first {
				first = d
			}
		case s.end.After(at):
			held = max(held, s.end.Sub(at))
		}
	}
	return first, held
}

// slowest is the submission that took longest.
func slowest(subs []submission) submission {
	var slow submission
	for _, s := range subs {
		if s.end.Sub(s.start) > slow.end.Sub(slow.start) {
			slow = s
		}
	}
	return slow
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// metricLines is the lines of a Prometheus text exposition whose metric
// name starts with prefix, joined with "; ".
func metricLines(text, prefix string) string {
	var lines []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

// waitUntil polls cond every 100ms until it holds, and fails the test with
// cond's last word if it does not within limit: for real processes and
// containers, whose changes no test signal announces.
func waitUntil(t testing.TB, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, limit, why)
		}
		<-tick.C
	}
}

// acceptedBefore is the submissions of subs accepted before at.
func acceptedBefore(subs []submission, at time.Time) []submission {
	return slices.DeleteFunc(slices.Clone(subs), func(s submission) bool { return !s.end.Before(at) })
}

// movedFrom returns the jobs that an attempt on host began and another
// host's ended (ran), those whose first delivery never reached a worker
// and that another host's attempt ended (held: the history has an attempt
// with no host, lost, for the delivery that a host held ahead and never
// ran), and when the last of them ended. Only one host is cut off or lost
// at a time, so the held ones are that host's.
func movedFrom(jobs map[string]client.Job, host string) (ran, held []string, last time.Time) {
	for id, j := range jobs {
		end := j.History[len(j.History)-1]
		switch {
		case end.Host == host:
		case slices.ContainsFunc(j.History, func(a client.Attempt) bool { return a.Host == host }):
			ran = append(ran, id)
			last = later(last, end.EndedAt)
		case slices.ContainsFunc(j.History, func(a client.Attempt) bool { return a.Host == "" && a.Lost }):
			held = append(held, id)
			last = later(last, end.EndedAt)
		}
	}
	slices.Sort(ran)
	slices.Sort(held)
	return ran, held, last
}
