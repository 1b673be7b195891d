package conductor

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHostNames: the names a server answers to, by its listen address.
func TestHostNames(t *testing.T) {
	t.Parallel()
	hostname, err := os.Hostname()
	require.NoError(t, err)
	for _, tc := range []struct {
		listen  string
		extra   []string
		allowed []string
		refused []string
	}{
		{"127.0.0.1:7070", nil,
			[]string{"", "127.0.0.1:7070", "localhost", "localhost:1", "[::1]:7070", hostname, "LOCALHOST.:7070"},
			[]string{"evil.example", "evil.example:7070", "10.0.0.1:7070", "[fe80::1]:7070", "127.0.0.2", "localhost.evil.example", "x.localhost"}},
		{"0.0.0.0:7070", nil, // a wildcard: every IP literal is ours
			[]string{"10.0.0.1:7070", "192.168.1.20", "[fe80::1]:7070", "localhost", hostname},
			[]string{"evil.example", "10.0.0.1.nip.io:7070"}},
		{":7070", []string{"conductor.internal"},
			[]string{"10.0.0.1", "conductor.internal:443", "Conductor.Internal."},
			[]string{"evil.example", "conductor.internal.evil.example"}},
		{"[::]:7070", nil, []string{"[2001:db8::1]:7070"}, []string{"evil.example"}},
		{"10.0.0.5:7070", []string{"ops.example.com"},
			[]string{"10.0.0.5:7070", "ops.example.com", "127.0.0.1"},
			[]string{"10.0.0.6:7070", "evil.example"}},
		{"", nil, []string{"127.0.0.1:1234", "localhost"}, []string{"10.0.0.1", "evil.example"}},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			names := newHostNames(tc.listen, tc.extra)
			for _, h := range tc.allowed {
				require.True(t, names.allows(h), "%q", h)
			}
			for _, h := range tc.refused {
				require.False(t, names.allows(h), "%q", h)
			}
		})
	}
}

func TestCheckHTTPHost(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"conductor.internal", "10.0.0.5", "::1", "web-1", "a_b.example.com."} {
		require.NoError(t, checkHTTPHost(ok), ok)
	}
	for _, bad := range []string{"", "evil.example:80", "a b", "http://x", "x/y", "[::1]"} {
		require.Error(t, checkHTTPHost(bad), bad)
	}
}
