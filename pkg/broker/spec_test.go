package broker_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/pkg/broker"
)

func TestParseSpec(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		in   string
		want broker.Spec
	}{
		{
			name: "Minimal",
			in:   "name=squares,cmd=./bin/squares-worker",
			want: broker.Spec{Name: "squares", Cmd: []string{"./bin/squares-worker"}},
		},
		{
			name: "Quoted",
			in:   `name=squares,count=2,cmd=./bin/squares-worker --x 'a b' "c,d" e\ f`,
			want: broker.Spec{Name: "squares", Count: 2, Cmd: []string{"./bin/squares-worker", "--x", "a b", "c,d", "e f"}},
		},
		{
			name: "EveryKey",
			in: "name=api,count=3,protocol=none,listen=127.0.0.1:8080,dir=/srv,env=A=1,env=B=x=y," +
				"ready_timeout=10s,stop_timeout=1m,kill_timeout=500ms,max_attempts=5,max_restarts_per_minute=6,recycle=1h,max_jobs=100,max_rss=512MB,restart_delay=1s,restart_factor=1.5,restart_max_delay=1m,restart_reset=30s,cmd=api serve",
			want: broker.Spec{
				Name: "api", Count: 3, Protocol: broker.ProtocolNone, Listen: "127.0.0.1:8080", Dir: "/srv",
				Env: []string{"A=1", "B=x=y"}, ReadyTimeout: 10 * time.Second, StopTimeout: time.Minute,
				KillTimeout: 500 * time.Millisecond, MaxAttempts: 5, MaxRestartsPerMinute: 6,
				Recycle: time.Hour, MaxJobs: 100, MaxRSS: 512e6, RestartDelay: time.Second, RestartFactor: 1.5,
				RestartMaxDelay: time.Minute, RestartReset: 30 * time.Second,
				Cmd: []string{"api", "serve"},
			},
		},
		{
			name: "Spaces",
			in:   "name=a, count=1, cmd=w",
			want: broker.Spec{Name: "a", Count: 1, Cmd: []string{"w"}},
		},
		{
			name: "BreakerOff",
			in:   "name=a,max_failed_starts=off,cmd=w",
			want: broker.Spec{Name: "a", MaxFailedStarts: -1, Cmd: []string{"w"}},
		},
		{
			name: "Breaker",
			in:   "name=a,max_failed_starts=3,failed_start_window=30s,cmd=w",
			want: broker.Spec{Name: "a", MaxFailedStarts: 3, FailedStartWindow: 30 * time.Second, Cmd: []string{"w"}},
		},
		{
			name: "Limits",
			in:   "name=a,max_rss=200MB,cpu=1.5,pids=64,cmd=w",
			want: broker.Spec{Name: "a", MaxRSS: 200e6, CPU: 1.5, Pids: 64, Cmd: []string{"w"}},
		},
		{
			name: "LeastCPU",
			in:   "name=a,cpu=0.01,cmd=w",
			want: broker.Spec{Name: "a", CPU: 0.01, Cmd: []string{"w"}},
		},
		{
			name: "Upgrades",
			in:   "name=a,upgrade=./w-v2 --fast,upgrade= ./w-v3 'a b' ,cmd=./w --upgrade=x,y",
			want: broker.Spec{
				Name: "a", Upgrades: [][]string{{"./w-v2", "--fast"}, {"./w-v3", "a b"}},
				Cmd: []string{"./w", "--upgrade=x,y"},
			},
		},
		{
			name: "CmdTakesTheRest",
			in:   "name=a,cmd=sh -c 'echo name=b,count=2'",
			want: broker.Spec{Name: "a", Cmd: []string{"sh", "-c", "echo name=b,count=2"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := broker.ParseSpec(tc.in)
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
			require.NoError(t, got.Validate())
		})
	}
}

func TestParseSpec_errors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string
	}{
		{"", `broker: bad pool spec "": cmd: missing (it must come last)`},
		{"name=a", `broker: bad pool spec "name=a": cmd: missing (it must come last)`},
		{"count=2,cmd=w", `broker: bad pool spec "count=2,cmd=w": name: invalid name: pool name is empty`},
		{"name=a b,cmd=w", `broker: bad pool spec "name=a b,cmd=w": name: invalid name: pool name "a b" has ' '`},
		{"name=a,cmd=", `broker: bad pool spec "name=a,cmd=": cmd: missing program`},
		{"name=a,cmd=w 'x", `broker: bad pool spec "name=a,cmd=w 'x": cmd: Unterminated single-quoted string`},
		{"name=a,colour=red,cmd=w", `broker: bad pool spec "name=a,colour=red,cmd=w": colour: unknown key`},
		{"name=a,count,cmd=w", `broker: bad pool spec "name=a,count,cmd=w": count: want key=value`},
		{"name=a,,cmd=w", `broker: bad pool spec "name=a,,cmd=w": : want key=value`},
		{"name=a,name=b,cmd=w", `broker: bad pool spec "name=a,name=b,cmd=w": name: given twice`},
		{"name=a,count=two,cmd=w", `broker: bad pool spec "name=a,count=two,cmd=w": count: "two" is not a whole number`},
		{"name=a,count=0,cmd=w", `broker: bad pool spec "name=a,count=0,cmd=w": count: 0 is less than 1`},
		{"name=a,max_attempts=0,cmd=w", `max_attempts: 0 is less than 1`},
		{"name=a,max_restarts_per_minute=-1,cmd=w", `max_restarts_per_minute: -1 is less than 0`},
		{"name=a,max_failed_starts=-2,cmd=w", `max_failed_starts: -2 is less than -1`},
		{"name=a,restart_factor=0.5,cmd=w", `restart_factor: 0.5 is less than 1`},
		{"name=a,max_rss=lots,cmd=w", `max_rss: "lots" is not a size such as 512MB or 1GiB`},
		{"name=a,recycle=soon,cmd=w", `recycle: "soon" is not a duration`},
		{"name=a,ready_timeout=10,cmd=w", `ready_timeout: "10" is not a duration such as 30s or 1m`},
		{"name=a,stop_timeout=-1s,cmd=w", `stop_timeout: "-1s" is negative`},
		{"name=a,kill_timeout=soon,cmd=w", `kill_timeout: "soon" is not a duration`},
		{"name=a,protocol=http,cmd=w", `protocol: "http" is not "channel" or "none"`},
		{"name=a,listen=8080,cmd=w", `listen: "8080" is not HOST:PORT`},
		{"name=a,env=NOVALUE,cmd=w", `env: "NOVALUE" is not KEY=VALUE`},
		{"name=a,cpu=lots,cmd=w", `broker: bad pool spec "name=a,cpu=lots,cmd=w": cpu: "lots" is not a number of CPUs such as 1.5`},
		{"name=a,cpu=NaN,cmd=w", `cpu: "NaN" is not a number of CPUs such as 1.5`},
		{"name=a,cpu=-1,cmd=w", `cpu: negative`},
		{"name=a,cpu=0.001,cmd=w", `cpu: 0.001 is less than 0.01 (the kernel's least quota: 1ms in every 100ms)`},
		{"name=a,pids=0,cmd=w", `pids: 0 is less than 1`},
		{"name=a,pids=many,cmd=w", `pids: "many" is not a whole number`},
		{"name=a,env==x,cmd=w", `env: "=x" is not KEY=VALUE`},
		{"name=a,upgrade=,cmd=w", `upgrades: a command line without a program`},
		{"name=a,upgrade=w 'x,cmd=w", `upgrade: Unterminated single-quoted string`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			_, err := broker.ParseSpec(tc.in)
			require.ErrorIs(t, err, broker.ErrBadSpec)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestSpec_Validate(t *testing.T) {
	t.Parallel()
	ok := broker.Spec{Name: "a", Cmd: []string{"w"}}
	require.NoError(t, ok.Validate())
	for _, tc := range []struct {
		name string
		edit func(*broker.Spec)
		want string
	}{
		{"NoCmd", func(s *broker.Spec) { s.Cmd = nil }, `broker: bad pool spec: pool "a": cmd: missing program`},
		{"NegativeCount", func(s *broker.Spec) { s.Count = -1 }, `pool "a": count: negative`},
		{"NegativeKillTimeout", func(s *broker.Spec) { s.KillTimeout = -time.Second }, `pool "a": kill_timeout: negative`},
		{"BadProtocol", func(s *broker.Spec) { s.Protocol = "grpc" }, `pool "a": protocol: "grpc" is not`},
		{"BadName", func(s *broker.Spec) { s.Name = "a.b" }, `pool "a.b": name: invalid name`},
		{"NegativePids", func(s *broker.Spec) { s.Pids = -1 }, `pool "a": pids: negative`},
		{"NegativeCPU", func(s *broker.Spec) { s.CPU = -0.5 }, `pool "a": cpu: negative`},
		{"TinyCPU", func(s *broker.Spec) { s.CPU = 0.005 }, `pool "a": cpu: 0.005 is less than 0.01`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := ok
			tc.edit(&s)
			err := s.Validate()
			require.ErrorIs(t, err, broker.ErrBadSpec)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add("name=squares,count=2,cmd=./bin/squares-worker --x 'a b'")
	f.Add("name=web,protocol=none,listen=127.0.0.1:0,env=A=B,cmd=srv")
	f.Add("name=x,count=-1,cmd=")
	f.Add("cmd=\"unterminated")
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := broker.ParseSpec(s)
		if err != nil {
			require.ErrorIs(t, err, broker.ErrBadSpec, "%q", s)
			return
		}
		require.NoError(t, spec.Validate(), "ParseSpec accepted %q but Validate refuses it", s)
		require.NotEmpty(t, spec.Cmd)
	})
}
