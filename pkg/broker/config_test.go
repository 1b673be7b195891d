package broker_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	specs, err := broker.ParseConfig([]byte(`
pools:
  - name: squares
    count: 2
    cmd: ./bin/squares-worker --label 'a b'
    env: [LOG_LEVEL=debug, X=1]
    stop_timeout: 1m
    max_attempts: 5
    max_rss: 200MB
    cpu: 1.5
    pids: 64
    upgrades:
      - ./bin/squares-worker-v2 --label 'a b'
      - [./bin/squares-worker, --fast]
  - name: web
    protocol: none
    listen: 127.0.0.1:8080
    cmd: [./bin/web, --port, "0"]
`))
	require.NoError(t, err)
	require.Equal(t, []broker.Spec{
		{
			Name: "squares", Count: 2, Cmd: []string{"./bin/squares-worker", "--label", "a b"},
			Env: []string{"LOG_LEVEL=debug", "X=1"}, StopTimeout: time.Minute, MaxAttempts: 5,
			MaxRSS: 200e6, CPU: 1.5, Pids: 64,
			Upgrades: [][]string{{"./bin/squares-worker-v2", "--label", "a b"}, {"./bin/squares-worker", "--fast"}},
		},
		{Name: "web", Protocol: broker.ProtocolNone, Listen: "127.0.0.1:8080", Cmd: []string{"./bin/web", "--port", "0"}},
	}, specs)
}

func TestParseConfig_errors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, yaml, want string }{
		{"UnknownTopKey", "pool:\n  - name: a\n    cmd: x\n", "field pool not found"},
		{"NoPools", "pools: []\n", "no pools"},
		{"UnknownKey", "pools:\n  - name: a\n    colour: red\n    cmd: x\n", `pool "a": colour: unknown key`},
		{"BadDuration", "pools:\n  - name: a\n    stop_timeout: soon\n    cmd: x\n", `pool "a": stop_timeout: "soon" is not a duration`},
		{"BadCount", "pools:\n  - name: a\n    count: many\n    cmd: x\n", `pool "a": count`},
		{"NoCmd", "pools:\n  - name: a\n", `pool "a": cmd: missing`},
		{"NoName", "pools:\n  - cmd: x\n", "pool #1: name"},
		{"EnvNotList", "pools:\n  - name: a\n    env: A=B\n    cmd: x\n", "env: want a list"},
		{"UpgradesNotList", "pools:\n  - name: a\n    upgrades: ./v2\n    cmd: x\n", "upgrades: want a list of command lines"},
		{"UpgradeEmpty", "pools:\n  - name: a\n    upgrades: ['']\n    cmd: x\n", `pool "a": upgrades: a command line without a program`},
		{"UpgradeBadQuote", "pools:\n  - name: a\n    upgrades: [\"x 'y\"]\n    cmd: x\n", `upgrades: #1: Unterminated`},
		{"NotYAML", "pools: [\n", "yaml"},
		{"BadCPU", "pools:\n  - name: a\n    cpu: two\n    cmd: x\n", `pool "a": cpu: "two" is not a number of CPUs such as 1.5`},
		{"TinyCPU", "pools:\n  - name: a\n    cpu: 0.001\n    cmd: x\n", `pool "a": cpu: 0.001 is less than 0.01`},
		{"BadPids", "pools:\n  - name: a\n    pids: 0\n    cmd: x\n", `pool "a": pids: 0 is less than 1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := broker.ParseConfig([]byte(tc.yaml))
			require.ErrorIs(t, err, broker.ErrBadSpec)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pools.yaml")
	require.NoError(t, os.WriteFile(path, []byte("pools:\n  - name: a\n    cmd: x\n"), 0o600))
	specs, err := broker.LoadConfig(path)
	require.NoError(t, err)
	require.Len(t, specs, 1)

	_, err = broker.LoadConfig(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorIs(t, err, broker.ErrBadSpec)
	require.ErrorContains(t, err, "missing.yaml")
}
