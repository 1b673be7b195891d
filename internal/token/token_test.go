package token

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in, err string
	}{
		{in: "squares"},
		{in: "A-b_9"},
		{in: strings.Repeat("x", MaxLen)},
		{in: "", err: "invalid name: pool name is empty"},
		{in: "a.b", err: `invalid name: pool name "a.b" has '.'; use only letters, digits, '-' and '_'`},
		{in: "a b", err: `invalid name: pool name "a b" has ' '; use only letters, digits, '-' and '_'`},
		{in: "*", err: `invalid name: pool name "*" has '*'; use only letters, digits, '-' and '_'`},
		{in: "ü", err: `invalid name: pool name "ü" has 'ü'; use only letters, digits, '-' and '_'`},
		{in: strings.Repeat("x", MaxLen+1), err: "longer than 128 characters"},
	} {
		err := Check("pool name", tc.in)
		if tc.err == "" {
			require.NoError(t, err, tc.in)
			continue
		}
		require.ErrorIs(t, err, ErrInvalid)
		require.ErrorContains(t, err, tc.err)
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()

	for in, want := range map[string]string{
		"web-1.example.com":           "web-1-example-com",
		"":                            "unknown",
		"ü ber.host":                  "--ber-host",
		strings.Repeat("a", MaxLen+5): strings.Repeat("a", MaxLen),
	} {
		got := Sanitize(in)
		require.Equal(t, want, got, in)
		require.NoError(t, Check("host id", got))
	}
}
