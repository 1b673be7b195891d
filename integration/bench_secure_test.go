package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/tlsconf/tlstest"
	"github.com/conductor-run/conductor/pkg/client"
)

// BenchmarkSecured measures what roles and TLS cost: in each run, two
// clusters of the real binaries (conductord, one workerd with 2 no-op
// workers), one plain (no credential, no TLS) and one secured (per-role
// credentials, NATS over TLS with client certificates required, the
// workerd's host credential and the benchmark's admin one), in
// alternating order. Each measures the raw JetStream work queue
// (rawWorkQueue) and e2e (endToEnd); the figures are the secured ones as
// ratios of the plain ones of the same run: e2e_ratio (goal >= 0.8) and
// raw_tls_ratio. Run it with
//
//	go test -run '^$' -bench Secured -benchtime 1x -count 5 ./integration/
//
// (one pair a line; the order alternates from one to the next).
func BenchmarkSecured(b *testing.B) {
	for range b.N {
		i := securedRuns
		securedRuns++
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		raw, e2e := map[bool]float64{}, map[bool]float64{}
		for _, secure := range order {
			raw[secure], e2e[secure] = securedRun(b, secure)
		}
		b.ReportMetric(raw[false], "raw_plain_msgs/s")
		b.ReportMetric(raw[true], "raw_tls_msgs/s")
		b.ReportMetric(raw[true]/raw[false], "raw_tls_ratio")
		b.ReportMetric(e2e[false], "e2e_plain_jobs/s")
		b.ReportMetric(e2e[true], "e2e_secured_jobs/s")
		b.ReportMetric(e2e[true]/e2e[false], "e2e_ratio")
		b.Logf("machine: %s/%s, %d CPUs; run %d (secured %s): raw plain %.0f, TLS %.0f msgs/s (%.3f); e2e plain %.0f, secured %.0f jobs/s (%.3f)",
			runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), i, map[bool]string{true: "first", false: "second"}[order[0]],
			raw[false], raw[true], raw[true]/raw[false], e2e[false], e2e[true], e2e[true]/e2e[false])
	}
}

// securedRuns counts BenchmarkSecured's pairs, to alternate their order.
var securedRuns int

// securedRun starts a cluster, plain or secured, and measures it.
func securedRun(b *testing.B, secure bool) (raw, e2e float64) {
	data := b.TempDir()
	addrs := freeAddrs(b, 2)
	args := []string{"--data", data, "--nats", addrs[0], "--http", addrs[1]}
	hostArgs := []string{"--conductor", "nats://" + addrs[0], "--host-id", "bench",
		"--pool", fmt.Sprintf("name=noop,count=2,cmd=%s", filepath.Join(bin, "noop-worker"))}
	var opts []nats.Option
	if secure {
		certs := tlstest.New(b)
		creds := func(id string, a ...string) string {
			out := filepath.Join(data, id+".token")
			cmd := exec.Command(filepath.Join(bin, "conductord"), append(append([]string{"creds", "add", "--data", data, "--out", out}, a...), id)...)
			msg, err := cmd.CombinedOutput()
			require.NoError(b, err, "%s", msg)
			tok, err := os.ReadFile(out)
			require.NoError(b, err)
			return strings.TrimSpace(string(tok))
		}
		// BENCH_SECURED=roles or tls measures one of the two alone.
		only := os.Getenv("BENCH_SECURED")
		if only != "tls" {
			admin := creds("bench-admin", "--role", "admin")
			creds("bench", "--role", "host", "--types", "noop")
			hostArgs = append(hostArgs, "--token-file", filepath.Join(data, "bench.token"))
			opts = append(opts, client.WithToken(admin))
		}
		if only != "roles" {
			args = append(args, "--tls-cert", certs.ServerCert, "--tls-key", certs.ServerKey, "--tls-ca", certs.CA, "--tls-verify")
			hostArgs = append(hostArgs, "--tls-ca", certs.CA, "--tls-cert", certs.ClientCert, "--tls-key", certs.ClientKey)
			opts = append(opts, nats.RootCAs(certs.CA), nats.ClientCert(certs.ClientCert, certs.ClientKey))
		}
	}
	cd := start(b, "conductord", args...)
	defer cd.stop(b, 20*time.Second)
	var nc *nats.Conn
	require.Eventually(b, func() bool {
		var err error
		nc, err = nats.Connect("nats://"+addrs[0], opts...)
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "connect to conductord")
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(b, err)
	// Once the job stream is there, conductord is ready.
	require.Eventually(b, func() bool {
		_, err := js.Stream(context.Background(), "conductor-default-jobs")
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	raw = rawWorkQueue(b, js)

	w := start(b, "workerd", hostArgs...)
	defer w.stop(b, 20*time.Second)
	cl, err := client.New(nc, client.Config{HostWait: 100 * time.Millisecond})
	require.NoError(b, err)
	require.Eventually(b, func() bool {
		ws, err := cl.Workers(context.Background())
		up := 0
		for _, wk := range ws {
			if wk.Pool == "noop" && (wk.State == "ready" || wk.State == "busy") {
				up++
			}
		}
		return err == nil && up == 2
	}, 30*time.Second, 50*time.Millisecond, "2 noop workers up")
	e2e = endToEnd(b, nc, js, "noop")
	return raw, e2e
}
