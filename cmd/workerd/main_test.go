package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
)

// warning is workerd's warning about --token on the command line.
const warning = "--token on the command line is visible to every local user in the process list; use --token-file or CONDUCTOR_TOKEN"

// TestRun_Flags runs workerd with flags that end it before it connects.
// Not parallel: it sets CONDUCTOR_TOKEN.
func TestRun_Flags(t *testing.T) {
	t.Setenv(names.EnvToken, "from-env")
	missing := filepath.Join(t.TempDir(), "token")
	pool := []string{"--cgroups", "off", "--conductor", "nats://127.0.0.1:1", "--pool", "name=a,count=3,cmd=/bin/true"}
	for _, tc := range []struct {
		name    string
		args    []string
		want    string
		warning bool
	}{
		{"TokenFlagWarns", []string{"--token", "x"}, "no pools", true},
		{"EnvDoesNotWarn", nil, "no pools", false},
		{"TokenFileBeatsEnv", append([]string{"--token-file", missing}, pool...), "token file: open " + missing, false},
		{"TokenAndTokenFile", append([]string{"--token", "x", "--token-file", missing}, pool...), "give a token or a token file, not both", true},
		{"MaxPoolSize", append([]string{"--max-pool-size", "2"}, pool...), `pool "a": count 3 is more than this host's maximum pool size, 2 (workerd --max-pool-size)`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tc.args, io.Discard, &out)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, tc.warning, bytes.Contains(out.Bytes(), []byte(warning)), out.String())
		})
	}
}
