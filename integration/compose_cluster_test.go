package integration

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/client"
)

// TestComposeCluster runs docker-compose.cluster.yml: three NATS servers in
// one JetStream cluster, two conductords on it (--replicas 3) and three
// workerd hosts, each with a squares pool and a slow pool (noop-worker
// -delay 3s) of 2 workers. Jobs flow through both conductords' HTTP APIs
// while one NATS server is killed and started again, while a host is cut
// off the network and joined again, and while a host is killed for good;
// every accepted submission must end succeeded, once. The figures it
// measures are logged on lines that start with "FIGURE".
//
// The partition and the lost host each wait out a job lease (30 s), so the
// whole test takes about 2.5 minutes (docs/deployment.md, "What the
// compose cluster test measured"); COMPOSE_CLUSTER=short runs only the
// NATS server's kill. The parts run in order on one cluster, and stop at
// the first that fails: each expects the cluster the one before left.
func TestComposeCluster(t *testing.T) {
	if why := dockerAbsent(); why != "" {
		// Skipped where there is no Docker at all; where Docker is
		// installed but cannot run this (no engine, no docker-compose),
		// CI=true fails rather than skip: it is meant to run there.
		if _, err := exec.LookPath("docker"); err == nil && os.Getenv("CI") == "true" {
			t.Fatal("CI=true, and TestComposeCluster needs a Docker engine and docker-compose: " + why)
		}
		t.Skip("needs Docker and docker-compose: " + why)
	}
	cc := upComposeCluster(t)
	if !t.Run("NATSServerKilled", cc.natsServerKilled) {
		return
	}
	if os.Getenv("COMPOSE_CLUSTER") == "short" {
		t.Log("COMPOSE_CLUSTER=short: the partition and the lost host are not run")
		return
	}
	if !t.Run("HostPartitioned", cc.hostPartitioned) {
		return
	}
	t.Run("HostLost", cc.hostLost)
}

// composeCluster is one running docker-compose.cluster.yml project.
type composeCluster struct {
	t       *testing.T
	project string
	env     []string
	apis    []*api // conductord-1's and conductord-2's
}

// composeClusterHosts are the hosts of docker-compose.cluster.yml.
var composeClusterHosts = []string{"host-a", "host-b", "host-c"}

// upComposeCluster builds the two images, issues the secrets, starts the
// project under a name of its own and waits until both conductords answer
// and see the three hosts with all their workers up. Cleanup takes it all
// down, volumes, network and images included.
func upComposeCluster(t *testing.T) *composeCluster {
	project := fmt.Sprintf("conductorcluster%d", os.Getpid())
	image, natsImage := "conductor:"+project, "conductor-nats:"+project
	buildComposeClusterImages(t, image, natsImage)

	secrets := t.TempDir()
	run(t, "..", nil, "./scripts/compose-cluster-creds.sh", secrets)
	token, err := os.ReadFile(filepath.Join(secrets, "conductor", "token"))
	require.NoError(t, err)
	addrs := freeAddrs(t, 2)
	_, port1, _ := net.SplitHostPort(addrs[0])
	_, port2, _ := net.SplitHostPort(addrs[1])
	cc := &composeCluster{
		t: t, project: project,
		env: []string{
			"CONDUCTOR_IMAGE=" + image, "NATS_IMAGE=" + natsImage, "CONDUCTOR_CLUSTER_SECRETS=" + secrets,
			"CONDUCTOR_HTTP_PORT_1=" + port1, "CONDUCTOR_HTTP_PORT_2=" + port2,
		},
	}
	for _, a := range addrs {
		cc.apis = append(cc.apis, &api{name: "conductord-" + fmt.Sprint(len(cc.apis)+1), base: "http://" + a, token: strings.TrimSpace(string(token))})
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(cc.compose("logs", "--no-color", "--tail", "60"))
		}
		cc.compose("down", "-v", "--remove-orphans", "-t", "20")
	})
	began := time.Now()
	cc.compose("up", "-d")
	for _, a := range cc.apis {
		waitUntil(t, 3*time.Minute, a.name+" answers /v1/version", func() (bool, string) {
			code, err := a.call(context.Background(), http.MethodGet, "/v1/version", "", nil)
			return err == nil && code == http.StatusOK, fmt.Sprint(code, err)
		})
	}
	for _, a := range cc.apis {
		cc.waitHostsUp(a, composeClusterHosts, time.Minute)
	}
	t.Logf("FIGURE compose cluster up: both conductords answer and see 3 hosts with 12 workers up %.1fs after `up -d`", time.Since(began).Seconds())
	return cc
}

// buildComposeClusterImages builds the conductor image from the binaries
// TestMain built and the NATS image from a static nats-server of go.mod's
// version, both FROM scratch, and removes them at cleanup.
func buildComposeClusterImages(t *testing.T, image, natsImage string) {
	ctxDir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(ctxDir, "bin"), 0o755))
	for _, b := range []string{"conductord", "workerd", "conductorctl", "squares-worker", "noop-worker"} {
		data, err := os.ReadFile(filepath.Join(bin, b))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(ctxDir, "bin", b), data, 0o755))
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "bin", "nats-server"), "github.com/nats-io/nats-server/v2")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "build nats-server: %s", out)
	for _, f := range []string{"Dockerfile", "Dockerfile.nats"} {
		data, err := os.ReadFile(filepath.Join("..", f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(ctxDir, f), data, 0o644))
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", image, natsImage).Run() })
	run(t, ctxDir, nil, "docker", "build", "-q", "-t", image, ".")
	run(t, ctxDir, nil, "docker", "build", "-q", "-f", "Dockerfile.nats", "-t", natsImage, ".")
}

func (cc *composeCluster) compose(args ...string) string {
	cc.t.Helper()
	return run(cc.t, "..", cc.env, "docker-compose", append([]string{"-p", cc.project, "-f", "docker-compose.cluster.yml"}, args...)...)
}

// container is the id of service's container.
func (cc *composeCluster) container(service string) string {
	id := strings.TrimSpace(cc.compose("ps", "-q", service))
	require.NotEmpty(cc.t, id, "no container of %s", service)
	return id
}

// network is the project's private network.
func (cc *composeCluster) network() string { return cc.project + "_default" }

// waitHostsUp waits until a lists hosts among its live hosts, each with its
// 4 workers ready or busy.
func (cc *composeCluster) waitHostsUp(a *api, hosts []string, limit time.Duration) {
	cc.t.Helper()
	waitUntil(cc.t, limit, a.name+" sees "+strings.Join(hosts, ", ")+" with their workers up", func() (bool, string) {
		var ws []client.Worker
		if _, err := a.call(context.Background(), http.MethodGet, "/v1/workers", "", &ws); err != nil {
			return false, err.Error()
		}
		up := map[string]int{}
		for _, w := range ws {
			if w.State == "ready" || w.State == "busy" {
				up[w.Host]++
			}
		}
		for _, h := range hosts {
			if up[h] < 4 {
				return false, fmt.Sprintf("workers up by host: %v", up)
			}
		}
		return true, ""
	})
}

// liveHosts is the ids of the live hosts a lists in /v1/hosts (not
// those it lists lost).
func (cc *composeCluster) liveHosts(a *api) ([]string, error) {
	var hs []client.Host
	if _, err := a.call(context.Background(), http.MethodGet, "/v1/hosts", "", &hs); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(hs))
	for _, h := range hs {
		if h.Lost.IsZero() {
			ids = append(ids, h.Host)
		}
	}
	return ids, nil
}

// waitHostSeen waits until every conductord lists host (seen) or does not
// (!seen) in /v1/hosts, and returns when that was.
func (cc *composeCluster) waitHostSeen(host string, seen bool, limit time.Duration) time.Time {
	cc.t.Helper()
	for _, a := range cc.apis {
		waitUntil(cc.t, limit, fmt.Sprintf("%s lists %s: %v", a.name, host, seen), func() (bool, string) {
			ids, err := cc.liveHosts(a)
			if err != nil {
				return false, err.Error()
			}
			return slices.Contains(ids, host) == seen, fmt.Sprint(ids)
		})
	}
	return time.Now()
}

// slots is who runs each worker slot (host/pool/index): its pid and restarts.
func (cc *composeCluster) slots() map[string][2]int {
	cc.t.Helper()
	var ws []client.Worker
	_, err := cc.apis[0].call(context.Background(), http.MethodGet, "/v1/workers", "", &ws)
	require.NoError(cc.t, err)
	m := map[string][2]int{}
	for _, w := range ws {
		m[fmt.Sprintf("%s/%s/%d", w.Host, w.Pool, w.Index)] = [2]int{w.PID, w.Restarts}
	}
	return m
}

// waitRunning waits until host runs a job of pool that began less than
// fresh ago (so that it still runs for a while: the slow pool's jobs take
// 3 s), and returns its id. The workers' jobs come from the hosts'
// heartbeats, up to a second old; the attempt's start from its state.
func (cc *composeCluster) waitRunning(host, pool string, fresh time.Duration) string {
	cc.t.Helper()
	var id string
	waitUntil(cc.t, 30*time.Second, host+" runs a "+pool+" job begun just now", func() (bool, string) {
		var ws []client.Worker
		if _, err := cc.apis[0].call(context.Background(), http.MethodGet, "/v1/workers", "", &ws); err != nil {
			return false, err.Error()
		}
		for _, w := range ws {
			if w.Host != host || w.Pool != pool || w.Job == "" {
				continue
			}
			var j client.Job
			if _, err := cc.apis[0].call(context.Background(), http.MethodGet, "/v1/jobs/"+w.Job, "", &j); err != nil || len(j.History) == 0 {
				continue
			}
			a := j.History[len(j.History)-1]
			if a.Host == host && a.EndedAt.IsZero() && time.Since(a.StartedAt) < fresh {
				id = j.ID
				return true, ""
			}
		}
		return false, "none"
	})
	return id
}

// jobStreamLeader finds the NATS server that leads the job stream, from the
// servers' logs (no NATS port is published to ask them): the latest "new
// stream leader" line of the stream. "" if none says so.
func (cc *composeCluster) jobStreamLeader() string {
	logs := cc.compose("logs", "--no-color", "nats-1", "nats-2", "nats-3")
	re := regexp.MustCompile(`(?m)^(nats-\d)[_-]\d+\s+\|\s+\[\d+\] (\S+ \S+) \[INF\] JetStream cluster new stream leader for '\$G > conductor-default-jobs'`)
	leader, at := "", ""
	for _, m := range re.FindAllStringSubmatch(logs, -1) {
		if m[2] > at {
			leader, at = m[1], m[2]
		}
	}
	return leader
}

// natsServerKilled: SIGKILL of the NATS server leading the job stream while
// squares jobs flow through both conductords, then its start again. No
// accepted job is lost, every one ends once, and no worker process stops.
func (cc *composeCluster) natsServerKilled(t *testing.T) {
	before := cc.slots()
	f := startFlow(cc.apis, "squares", 2, 100*time.Millisecond)
	t.Cleanup(f.stop)
	f.waitAccepted(t, 20, 30*time.Second)

	leader := cc.jobStreamLeader()
	victim := cmp.Or(leader, "nats-1")
	killedAt := time.Now()
	cc.compose("kill", victim)
	t.Logf("killed %s (the job stream's leader as the servers' logs say: %q) with %d submissions accepted", victim, leader, len(f.accepted()))
	first := f.waitAcceptedAfter(t, killedAt, time.Minute)
	t.Logf("FIGURE nats kill -> first accepted submission begun after it: %.2fs (via %s, the request took %.2fs)",
		first.end.Sub(killedAt).Seconds(), first.via, first.end.Sub(first.start).Seconds())
	f.waitAccepted(t, len(f.accepted())+40, time.Minute)

	startedAt := time.Now()
	cc.compose("start", victim)
	again := f.waitAcceptedAfter(t, startedAt, time.Minute)
	t.Logf("FIGURE nats start -> first accepted submission begun after it: %.2fs", again.end.Sub(startedAt).Seconds())
	f.waitAccepted(t, len(f.accepted())+40, time.Minute)
	f.stop()
	subs, refused, lastErr := f.result()
	slow := slowest(subs)
	t.Logf("FIGURE nats kill: %d submissions accepted, %d not (last: %s); the slowest took %.2fs, through %s, begun %.2fs after the kill (the start was %.2fs after it)",
		len(subs), refused, lastErr, slow.end.Sub(slow.start).Seconds(), slow.via, slow.start.Sub(killedAt).Seconds(), startedAt.Sub(killedAt).Seconds())
	for _, a := range cc.apis {
		for _, at := range []struct {
			what string
			at   time.Time
		}{{"kill", killedAt}, {"start", startedAt}} {
			first, held := around(subs, a.name, at.at)
			t.Logf("FIGURE nats %s, through %s: the first submission begun after it accepted %.2fs after it; those under way at it accepted up to %.2fs after it",
				at.what, a.name, first.Seconds(), held.Seconds())
		}
	}

	jobs := cc.waitEnded(t, subs, time.Minute)
	redone := checkEndedOnce(t, jobs)
	t.Logf("nats kill: every one of %d jobs succeeded once; %d had more than one attempt", len(jobs), redone)
	require.Equal(t, before, cc.slots(), "a worker stopped or restarted while a NATS server was down")
}

// hostPartitioned: host-c is cut off the network while slow and squares
// jobs flow, past the jobs' lease, then joined again. The other hosts take
// its jobs after the lease, it is listed again, and every job ends once.
func (cc *composeCluster) hostPartitioned(t *testing.T) {
	const host = "host-c"
	slow := startFlow(cc.apis, "slow", 1, 1500*time.Millisecond)
	t.Cleanup(slow.stop)
	fast := startFlow(cc.apis, "squares", 1, 200*time.Millisecond)
	t.Cleanup(fast.stop)
	running := cc.waitRunning(host, "slow", 1500*time.Millisecond)
	id := cc.container(host)
	cutAt := time.Now()
	run(t, "", nil, "docker", "network", "disconnect", "-f", cc.network(), id)
	cut := time.Now() // jobs accepted until now may have gone to it
	healed := false
	heal := func() {
		if !healed {
			healed = true
			run(t, "", nil, "docker", "network", "connect", cc.network(), id)
		}
	}
	t.Cleanup(heal)
	t.Logf("cut %s off the network, running job %s", host, running)
	gone := cc.waitHostSeen(host, false, 30*time.Second)
	t.Logf("FIGURE partition -> %s gone from /v1/hosts of both conductords: %.2fs", host, gone.Sub(cutAt).Seconds())

	// Every job queued before the cut ends, those it held included: they
	// come back after their lease, to the other hosts.
	before := cc.waitEnded(t, acceptedBefore(append(slow.accepted(), fast.accepted()...), cut), 90*time.Second)
	moved, held, last := movedFrom(before, host)
	require.Contains(t, moved, running, "the job %s ran when cut off was not delivered again", host)
	t.Logf("FIGURE partition -> the %d jobs it ran and the %d it held ahead taken and ended by other hosts: %.2fs",
		len(moved), len(held), last.Sub(cutAt).Seconds())
	for _, id := range append(moved, held...) {
		t.Logf("  job %s history: %s", id, historyString(before[id]))
	}

	healAt := time.Now()
	heal()
	back := cc.waitHostSeen(host, true, time.Minute)
	t.Logf("FIGURE heal -> %s listed again by both conductords: %.2fs", host, back.Sub(healAt).Seconds())
	cc.waitHostsUp(cc.apis[0], composeClusterHosts, 30*time.Second)
	slow.waitAccepted(t, len(slow.accepted())+4, 30*time.Second)
	slow.stop()
	fast.stop()

	subs := append(slow.accepted(), fast.accepted()...)
	jobs := cc.waitEnded(t, subs, 90*time.Second)
	redone := checkEndedOnce(t, jobs)
	// A delivery to the host cut off that never reached a worker shows as
	// a first attempt with no host, lost: the server went on handing jobs
	// to the host's pull requests after the cut, and each waited out its
	// lease.
	void, first, lastVoid := 0, time.Duration(0), time.Duration(0)
	for _, sub := range subs {
		if slices.ContainsFunc(jobs[sub.id].History, func(a client.Attempt) bool { return a.Host == "" && a.Lost }) {
			if d := sub.end.Sub(cutAt); void == 0 || d < first {
				first = d
			}
			void++
			lastVoid = max(lastVoid, sub.end.Sub(cutAt))
		}
	}
	t.Logf("FIGURE partition: %d jobs went to %s's pending pulls and waited out a lease before another host ran them; accepted from %.2fs to %.2fs after the cut",
		void, host, first.Seconds(), lastVoid.Seconds())
	lost, late := attemptsOf(jobs, host)
	t.Logf("partition: every one of %d jobs succeeded once; %d had more than one attempt; %s: %d attempts lost, %d superseded (ended late)",
		len(jobs), redone, host, lost, late)
	for _, id := range moved {
		t.Logf("  after the heal, job %s history: %s", id, historyString(jobs[id]))
	}
}

// hostLost: host-b's container is killed while it runs slow jobs, and never
// started again. Its jobs are delivered again after the lease and end
// succeeded on the other hosts; /v1/hosts lists it lost, /v1/workers its
// workers in state lost.
func (cc *composeCluster) hostLost(t *testing.T) {
	const host = "host-b"
	slow := startFlow(cc.apis, "slow", 1, 1500*time.Millisecond)
	t.Cleanup(slow.stop)
	running := cc.waitRunning(host, "slow", 1500*time.Millisecond)
	killedAt := time.Now()
	cc.compose("kill", host)
	killed := time.Now() // jobs accepted until now may have gone to it
	t.Logf("killed %s, running job %s", host, running)
	gone := cc.waitHostSeen(host, false, 30*time.Second)
	t.Logf("FIGURE host kill -> %s gone from /v1/hosts of both conductords: %.2fs", host, gone.Sub(killedAt).Seconds())
	for _, a := range cc.apis {
		var hs []client.Host
		_, err := a.call(context.Background(), http.MethodGet, "/v1/hosts", "", &hs)
		require.NoError(t, err)
		i := slices.IndexFunc(hs, func(h client.Host) bool { return h.Host == host })
		require.GreaterOrEqual(t, i, 0, "%s does not list the lost host", a.name)
		require.False(t, hs[i].Lost.IsZero(), "%s lists %s, not lost: %+v", a.name, host, hs[i])
		var ws []client.Worker
		_, err = a.call(context.Background(), http.MethodGet, "/v1/workers", "", &ws)
		require.NoError(t, err)
		n := 0
		for _, w := range ws {
			if w.Host == host {
				require.Equal(t, client.WorkerLost, w.State, "%s lists a worker of the lost host: %+v", a.name, w)
				n++
			}
		}
		require.Positive(t, n, "%s lists the lost host's workers", a.name)
		var metrics string
		_, err = a.call(context.Background(), http.MethodGet, "/metrics", "", &metrics)
		require.NoError(t, err)
		t.Logf("after the kill, %s: /v1/hosts lists %s lost (last heard %s), /v1/workers its %d workers lost; /metrics says %s",
			a.name, host, hs[i].Lost.Format(time.RFC3339Nano), n, metricLines(metrics, "conductor_hosts"))
	}

	before := cc.waitEnded(t, acceptedBefore(slow.accepted(), killed), 90*time.Second)
	moved, held, last := movedFrom(before, host)
	require.Contains(t, moved, running, "the job the lost host ran was not delivered again")
	for _, id := range held {
		t.Logf("  job %s history: %s", id, historyString(before[id]))
	}
	for _, id := range moved {
		j := before[id]
		require.True(t, slices.ContainsFunc(j.History, func(a client.Attempt) bool { return a.Host == host && a.Lost }),
			"job %s: the lost host's attempt is not marked lost: %s", id, historyString(j))
		t.Logf("  job %s history: %s", id, historyString(j))
	}
	t.Logf("FIGURE host kill -> the %d jobs it ran and the %d it held ahead delivered again and ended: %.2fs",
		len(moved), len(held), last.Sub(killedAt).Seconds())
	slow.waitAccepted(t, len(slow.accepted())+4, 30*time.Second)
	slow.stop()
	jobs := cc.waitEnded(t, slow.accepted(), 60*time.Second)
	redone := checkEndedOnce(t, jobs)
	t.Logf("host lost: every one of %d jobs succeeded once; %d had more than one attempt", len(jobs), redone)
}
