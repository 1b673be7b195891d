package broker

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/conductor-run/conductor/internal/names"
)

// TestInheritedEnv: workers inherit workerd's environment without its
// credentials and socket-activation variables.
func TestInheritedEnv(t *testing.T) {
	t.Parallel()
	environ := []string{
		"PATH=/bin", names.EnvToken + "=s3cret", "HOME=/root",
		names.EnvListenPID + "=1", names.EnvListenFDs + "=1", names.EnvListenFDNames + "=x",
		names.EnvToken + "_NOT=kept", "X=" + names.EnvToken + "=kept",
	}
	orig := slices.Clone(environ)
	require.Equal(t, []string{"PATH=/bin", "HOME=/root", names.EnvToken + "_NOT=kept", "X=" + names.EnvToken + "=kept"}, inheritedEnv(environ))
	require.Equal(t, orig, environ, "the caller's slice is left as it was")
}

// TestNewProcConfig_TokenWithheld: a worker does not see workerd's
// CONDUCTOR_TOKEN, unless its pool's env sets one.
func TestNewProcConfig_TokenWithheld(t *testing.T) {
	t.Setenv(names.EnvToken, "workerd-secret")
	tokens := func(env []string) []string {
		var out []string
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, names.EnvToken+"="); ok {
				out = append(out, v)
			}
		}
		return out
	}
	spec := Spec{Name: "p", Cmd: []string{"w"}}.withDefaults()
	c := newProcConfig(spec, "/bin/w", "h1", 0, nil, nil)
	require.Empty(t, tokens(c.env))

	spec.Env = []string{names.EnvToken + "=the-pool's-own"}
	c = newProcConfig(spec, "/bin/w", "h1", 0, nil, nil)
	require.Equal(t, []string{"the-pool's-own"}, tokens(c.env))
}
