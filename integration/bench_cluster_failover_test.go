package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/pkg/client"
)

// The fail-over benchmarks of issue 18 (bench_cluster_test.go has the
// cluster and the throughput ones): a NATS server lost, a conductord
// leader lost, a host lost, each BENCH_CLUSTER_RUNS times.

// timedSubmit is one successful Submit: when it began and when it returned.
type timedSubmit struct{ began, ended time.Time }

// BenchmarkClusterServerLoss: the time from a SIGKILL of the nats-server
// that leads the job stream to the first successful submission begun after
// it, while one client submits in a loop (Client.Submit: each attempt
// waits 2 s, then tries again) and a workerd runs the jobs. The killed
// server is started again, and the stream has its 3 replicas current,
// before the next run.
func BenchmarkClusterServerLoss(b *testing.B) {
	for range b.N {
		np := startNATSProcs(b, 3)
		onNATS(b, np.urls())
		start(b, "workerd", "--conductor", np.urls(), "--host-id", "h1",
			"--pool", "name=noop,count=2,cmd="+filepath.Join(bin, "noop-worker"))
		nc, err := nats.Connect(np.urls())
		require.NoError(b, err)
		b.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		require.NoError(b, err)
		cl, err := client.Connect(np.urls(), client.Config{})
		require.NoError(b, err)
		b.Cleanup(cl.Close)
		space, _ := subject.New("default")

		oks := make(chan timedSubmit, 1<<16)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { submitLoop(b, cl, oks, stop) })
		defer func() { close(stop); wg.Wait() }()

		var firsts, elected []float64
		for range clusterRuns(b) {
			leader := streamSettled(b, js, space.JobStream())
			fresh := drainThenNext(b, oks) // submissions flow now
			killed := time.Now()
			nd := np.kill(leader)
			newLeader := make(chan time.Time, 1)
			go func() { newLeader <- leaderOtherThan(js, space.JobStream(), leader) }()
			var first timedSubmit
			for first = fresh; first.began.Before(killed); {
				select {
				case first = <-oks:
				case <-time.After(2 * time.Minute):
					b.Fatal("no submission succeeded within 2 minutes of the kill")
				}
			}
			took, elect := first.ended.Sub(killed), (<-newLeader).Sub(killed)
			firsts, elected = append(firsts, took.Seconds()), append(elected, elect.Seconds())
			b.Logf("killed %s (the job stream's leader); a new leader seen %s later, the first submission begun after the kill succeeded %s later",
				leader, elect.Round(time.Millisecond), took.Round(time.Millisecond))
			np.restart(nd)
		}
		logMachine(b)
		reportSpread(b, firsts, "server_loss_first_submit_s")
		reportSpread(b, elected, "server_loss_new_leader_s")
	}
}

// submitLoop submits noop jobs one after another until stop is closed,
// sending each success on oks.
func submitLoop(b *testing.B, cl *client.Client, oks chan<- timedSubmit, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		began := time.Now()
		_, err := cl.Submit(ctx, "noop", i)
		cancel()
		if err != nil {
			b.Logf("submit %d: %v", i, err)
			continue
		}
		select {
		case oks <- timedSubmit{began, time.Now()}:
		case <-stop:
			return
		}
	}
}

// leaderOtherThan polls stream's info until it names a leader other than
// old (at most 2 minutes), and returns when it saw it.
func leaderOtherThan(js jetstream.JetStream, stream, old string) time.Time {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); <-tick.C {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		s, err := js.Stream(ctx, stream)
		cancel()
		if err == nil {
			if ci := s.CachedInfo().Cluster; ci != nil && ci.Leader != "" && ci.Leader != old {
				return time.Now()
			}
		}
	}
	return time.Now()
}

// drainThenNext empties oks and returns the next timedSubmit to succeed.
func drainThenNext(b *testing.B, oks <-chan timedSubmit) timedSubmit {
	for {
		select {
		case <-oks:
			continue
		default:
		}
		break
	}
	select {
	case s := <-oks:
		return s
	case <-time.After(time.Minute):
		b.Fatal("no submission succeeded within a minute")
		return timedSubmit{}
	}
}

// BenchmarkClusterLeaderLoss: two conductords on one namespace; the time
// from a SIGKILL of the leader to GET /v1/leader on the other saying
// leading=true, with --leader-lease 1s and with the default 5s (each on a
// namespace of its own, on the same servers). The killed conductord is
// started again (its --data: it comes back as a follower) before the next
// run, which kills the new leader.
func BenchmarkClusterLeaderLoss(b *testing.B) {
	for range b.N {
		np := startNATSProcs(b, 3)
		for _, lease := range []time.Duration{time.Second, 5 * time.Second} {
			args := []string{"--namespace", fmt.Sprintf("lease%s", lease), "--leader-lease", lease.String()}
			pair := [2]*cluster{onNATS(b, np.urls(), args...), onNATS(b, np.urls(), args...)}
			var took []float64
			for range clusterRuns(b) {
				lead, other := whoLeads(b, pair)
				killed := time.Now()
				require.NoError(b, lead.conductor.cmd.Process.Signal(syscall.SIGKILL))
				<-lead.conductor.exited
				require.Eventually(b, func() bool {
					li, ok := other.leader()
					return ok && li.Leading
				}, 10*lease, 2*time.Millisecond, "the survivor leads")
				d := time.Since(killed)
				took = append(took, d.Seconds())
				b.Logf("lease %s: the other leads %s after the SIGKILL", lease, d.Round(time.Millisecond))
				lead.startOnNATS(np.urls(), args...)
			}
			reportSpread(b, took, fmt.Sprintf("failover_lease%s_s", lease))
			for _, c := range pair {
				c.conductor.stop(b, 20*time.Second)
			}
		}
		logMachine(b)
	}
}

// whoLeads waits until both conductords of pair count 2 members and agree
// that one of them leads, and returns the leader and the other.
func whoLeads(b *testing.B, pair [2]*cluster) (lead, other *cluster) {
	require.Eventually(b, func() bool {
		l0, ok0 := pair[0].leader()
		l1, ok1 := pair[1].leader()
		switch {
		case !ok0 || !ok1 || l0.Members != 2 || l1.Members != 2 || l0.Leader != l1.Leader:
			return false
		case l0.Leading && !l1.Leading:
			lead, other = pair[0], pair[1]
		case l1.Leading && !l0.Leading:
			lead, other = pair[1], pair[0]
		default:
			return false
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "one of two leads")
	return lead, other
}

// BenchmarkClusterHostLoss: a workerd SIGKILLed with 2 jobs of 5 s in
// flight (one on each of its workers; the workers die with it), another
// host already up. It measures, from the kill: when the jobs started again
// on the other host (their lease, the consumer's ack wait of 30 s, run
// out: workerd asks for the default, and neither a pool spec nor a flag
// sets another), when both ended succeeded there, and when /v1/hosts
// stopped listing the killed host (three 1 s heartbeats missed).
func BenchmarkClusterHostLoss(b *testing.B) {
	for range b.N {
		np := startNATSProcs(b, 3)
		c := onNATS(b, np.urls())
		cl, err := client.Connect(np.urls(), client.Config{})
		require.NoError(b, err)
		b.Cleanup(cl.Close)
		ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
		defer cancel()
		slow := "name=slow,count=2,cmd=" + filepath.Join(bin, "noop-worker") + " -delay 5s"
		// BENCH_CLUSTER_JOB_LEASE sets workerd's --job-lease (default 30s).
		var lease []string
		if v := os.Getenv("BENCH_CLUSTER_JOB_LEASE"); v != "" {
			lease = []string{"--job-lease", v}
		}

		var restarted, ended, gone []float64
		for run := range clusterRuns(b) {
			ha, hb := fmt.Sprintf("a%d", run), fmt.Sprintf("b%d", run)
			a := start(b, "workerd", append([]string{"--conductor", np.urls(), "--host-id", ha, "--pool", slow}, lease...)...)
			c.waitHostWorkers(ha, 2)
			ids := []string{}
			for i := range 2 {
				id, err := cl.Submit(ctx, "slow", i)
				require.NoError(b, err)
				ids = append(ids, id)
			}
			require.Eventually(b, func() bool {
				for _, id := range ids {
					j, err := cl.Job(ctx, id)
					if err != nil || j.Status != client.StatusRunning || j.History[len(j.History)-1].Host != ha {
						return false
					}
				}
				return true
			}, 30*time.Second, 10*time.Millisecond, "both jobs running on %s", ha)
			other := start(b, "workerd", append([]string{"--conductor", np.urls(), "--host-id", hb, "--pool", slow}, lease...)...)
			c.waitHostWorkers(hb, 2)

			killed := time.Now()
			require.NoError(b, syscall.Kill(a.cmd.Process.Pid, syscall.SIGKILL))
			require.Eventually(b, func() bool { return !c.listsHost(ha) }, time.Minute, 10*time.Millisecond, "%s still listed", ha)
			gone = append(gone, time.Since(killed).Seconds())
			var again, end time.Time
			for _, id := range ids {
				j, err := cl.Wait(ctx, id)
				require.NoError(b, err)
				require.Equal(b, client.StatusSucceeded, j.Status, "job %s", id)
				last := j.History[len(j.History)-1]
				require.Equal(b, hb, last.Host, "job %s ended on the other host", id)
				again, end = later(again, last.StartedAt), later(end, last.EndedAt)
			}
			restarted, ended = append(restarted, again.Sub(killed).Seconds()), append(ended, end.Sub(killed).Seconds())
			b.Logf("run %d: host gone from /v1/hosts %.2fs after the kill; its jobs started again on %s %.2fs after, all succeeded %.2fs after",
				run+1, gone[run], hb, restarted[run], ended[run])
			other.stop(b, 20*time.Second)
		}
		logMachine(b)
		reportSpread(b, gone, "host_gone_s")
		reportSpread(b, restarted, "jobs_restarted_s")
		reportSpread(b, ended, "jobs_succeeded_s")
	}
}

// waitHostWorkers waits until host has n workers ready.
func (c *cluster) waitHostWorkers(host string, n int) {
	c.t.Helper()
	require.Eventually(c.t, func() bool {
		up := 0
		for _, w := range c.workers() {
			if w.Host == host && w.State == "ready" {
				up++
			}
		}
		return up >= n
	}, 30*time.Second, 20*time.Millisecond, "want %d workers ready on %s", n, host)
}

// listsHost reports whether GET /v1/hosts lists host live (not lost).
func (c *cluster) listsHost(host string) bool {
	var hs []client.Host
	c.do(http.MethodGet, "/v1/hosts", "", nil, &hs)
	for _, h := range hs {
		if h.Host == host && h.Lost.IsZero() {
			return true
		}
	}
	return false
}
