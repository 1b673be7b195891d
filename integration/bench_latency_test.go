package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
	"github.com/conductor-run/conductor/internal/subject"
)

// echoEnv, set to a NATS URL, makes the test binary an echo responder on
// echoSubject instead of running tests: the other process of the latency
// baseline. It answers until its standard input closes.
const (
	echoEnv     = "BENCH_ECHO_NATS"
	echoSubject = "bench.echo.remote"
)

func init() {
	if url := os.Getenv(echoEnv); url != "" {
		os.Exit(echoResponder(url))
	}
}

func echoResponder(url string) int {
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 1
	}
	defer nc.Close()
	if _, err := nc.Subscribe(echoSubject, func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 1
	}
	if err := nc.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// startEcho runs this test binary as an echo responder against url, waits
// until it has subscribed, and reaps it at cleanup (its stdin closed, then
// SIGKILL after 10s).
func startEcho(b *testing.B, url string) {
	b.Helper()
	exe, err := os.Executable()
	require.NoError(b, err)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), echoEnv+"="+url)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	require.NoError(b, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, cmd.Start())
	ready, exited := make(chan string, 1), make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		ready <- line
		_, _ = io.Copy(io.Discard, r)
		exited <- cmd.Wait()
	}()
	b.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			b.Errorf("echo responder did not exit within 10s of its stdin closing")
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})
	select {
	case line := <-ready:
		require.Equal(b, "ready\n", line, "echo responder")
	case <-time.After(30 * time.Second):
		b.Fatal("echo responder not ready within 30s")
	}
}

// BenchmarkLatency measures submit-to-result latency on an idle cluster
// (issue 19), sequential calls, against the floor measured in the same
// run: a raw NATS request/reply across processes (this process asks
// through conductord's embedded server; a responder in another process,
// this test binary re-run with BENCH_ECHO_NATS, answers). The paths, each
// a squares job (2 squares-workers under one workerd) waited for:
//   - nats: a request to conductor.default.submit.squares with header
//     Conductor-Wait: 10s (docs/protocol.md);
//   - http: POST /v1/jobs/squares?wait=10s, on a kept-alive connection;
//   - client: pkg/client's SubmitAndWait (its default configuration: it
//     publishes the job itself and waits for its end event).
//
// After 100 warm-up calls of each, BENCH_PAIRS rounds (default 5) of
// BENCH_LATENCY_CALLS calls (default 400) of rr, nats, http and client in
// turn. Reported: p50 and p99 of each (of all rounds' calls), and the
// ratio of each path's p50 to the floor's p50 of the same round (median,
// min, max over rounds). Goal: p50 <= 4x the floor.
//
//	go test -run '^$' -bench BenchmarkLatency -benchtime 1x ./integration/
func BenchmarkLatency(b *testing.B) {
	calls := envInt(b, "BENCH_LATENCY_CALLS", 400)
	for range b.N {
		c := newCluster(b)
		c.workerd("bench", squares(2))
		c.waitWorkers("squares", 2)
		nc, err := nats.Connect(c.natsURL())
		require.NoError(b, err)
		b.Cleanup(nc.Close)
		startEcho(b, c.natsURL())
		cl := c.goClient()
		space, _ := subject.New("default")
		httpc := &http.Client{}
		ctx := context.Background()

		paths := []struct {
			name string
			call func(i int)
		}{
			{"rr", func(i int) {
				_, err := nc.Request(echoSubject, []byte(strconv.Itoa(i)), 5*time.Second)
				require.NoError(b, err)
			}},
			{"nats", func(i int) {
				m := nats.NewMsg(space.Submit("squares"))
				m.Header.Set(names.HeaderWait, "10s")
				m.Data = []byte(strconv.Itoa(i))
				r, err := nc.RequestMsg(m, 15*time.Second)
				require.NoError(b, err)
				require.Equal(b, "200", r.Header.Get(names.HeaderStatus), "%s", r.Data)
			}},
			{"http", func(i int) {
				resp, err := httpc.Post(c.url("/v1/jobs/squares?wait=10s"), "application/json", strings.NewReader(strconv.Itoa(i)))
				require.NoError(b, err)
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				require.NoError(b, err)
				require.Equal(b, http.StatusOK, resp.StatusCode)
			}},
			{"client", func(i int) {
				j, err := cl.SubmitAndWait(ctx, "squares", i)
				require.NoError(b, err)
				require.Equal(b, "succeeded", string(j.Status), "%s", j.Error)
			}},
		}
		timed := func(call func(int), n, from int) []time.Duration {
			ds := make([]time.Duration, n)
			for i := range n {
				start := time.Now()
				call(from + i)
				ds[i] = time.Since(start)
			}
			return ds
		}
		for _, p := range paths {
			timed(p.call, 100, 0) // warm-up
		}
		all := map[string][]time.Duration{}
		p50s := map[string][]time.Duration{}
		for round := range benchPairs(b) {
			line := fmt.Sprintf("round %d:", round+1)
			for _, p := range paths {
				ds := timed(p.call, calls, 100+round*calls)
				all[p.name] = append(all[p.name], ds...)
				p50, p99 := percentiles(ds)
				p50s[p.name] = append(p50s[p.name], p50)
				line += fmt.Sprintf(" %s p50 %v p99 %v;", p.name, p50.Round(time.Microsecond), p99.Round(time.Microsecond))
			}
			b.Logf("%s", line)
		}
		// For context: the same request/reply with the responder in this
		// process, on the requester's own connection.
		inP50, inP99 := natsRoundTrip(b, nc, calls)

		logMachine(b)
		var table []string
		for _, p := range paths {
			p50, p99 := percentiles(slices.Clone(all[p.name]))
			b.ReportMetric(float64(p50.Microseconds()), p.name+"_p50_us")
			b.ReportMetric(float64(p99.Microseconds()), p.name+"_p99_us")
			row := fmt.Sprintf("%-7s %6d %10v %10v", p.name, len(all[p.name]), p50.Round(time.Microsecond), p99.Round(time.Microsecond))
			if p.name != "rr" {
				var ratios []float64
				for i, d := range p50s[p.name] {
					ratios = append(ratios, float64(d)/float64(p50s["rr"][i]))
				}
				reportMMM(b, p.name+"/rr_p50", ratios, 1)
				lo, med, hi := spread(ratios)
				verdict := "meets"
				if med > 4 {
					verdict = "MISSES"
				}
				row += fmt.Sprintf(" %7.2f %6.2f %6.2f  %s p50 <= 4x floor", med, lo, hi, verdict)
			}
			table = append(table, row)
		}
		b.ReportMetric(float64(inP50.Microseconds()), "rr_same_process_p50_us")
		b.Logf("submit-to-result latency, sequential, %d rounds of %d calls each after 100 warm-up (p50, p99 of all calls; p50 / floor p50 of each round: median, min, max):\n%-7s %6s %10s %10s %7s %6s %6s\n%s\n(rr is the floor: NATS request/reply to a responder in another process; with the responder in this process: p50 %v p99 %v)",
			benchPairs(b), calls, "path", "calls", "p50", "p99", "ratio", "min", "max", strings.Join(table, "\n"), inP50.Round(time.Microsecond), inP99.Round(time.Microsecond))
	}
}
