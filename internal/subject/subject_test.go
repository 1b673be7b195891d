package subject

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestToken(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in, errPart string
	}{
		{in: "squares"},
		{in: "A-b_9"},
		{in: "", errPart: "empty"},
		{in: "a.b", errPart: `'.'`},
		{in: "a b", errPart: `' '`},
		{in: "*", errPart: `'*'`},
		{in: strings.Repeat("x", MaxTokenLen+1), errPart: "longer"},
	} {
		err := Token("job type", tc.in)
		if tc.errPart == "" {
			require.NoError(t, err, tc.in)
			continue
		}
		require.ErrorIs(t, err, ErrBadToken)
		require.ErrorContains(t, err, tc.errPart)
	}
}

func TestSanitize(t *testing.T) {
	t.Parallel()

	require.Equal(t, "web-1-example-com", Sanitize("web-1.example.com"))
	require.Equal(t, "unknown", Sanitize(""))
	require.NoError(t, Token("host", Sanitize("ü ber.host")))
}

func TestSpace_Names(t *testing.T) {
	t.Parallel()

	_, err := New("bad.ns")
	require.Error(t, err)

	s, err := New("prod")
	require.NoError(t, err)
	require.Equal(t, "conductor.prod.jobs.squares", s.Job("squares"))
	typOf := func(subj string) string { typ, _ := s.ParseJob(subj); return typ }
	require.Equal(t, "squares", typOf(s.Job("squares")))
	require.Equal(t, "", typOf("conductor.other.jobs.squares"))
	require.Equal(t, "", typOf("conductor.prod.jobs.a.b"))
	require.Equal(t, "conductor.prod.jobs.squares", s.JobAt("squares", "normal"))
	require.Equal(t, "conductor.prod.jobs.squares.high", s.JobAt("squares", "high"))
	for _, prio := range []string{"high", "normal", "low"} {
		typ, p := s.ParseJob(s.JobAt("squares", prio))
		require.Equal(t, "squares", typ)
		require.Equal(t, prio, p)
		typ, p = s.ParseConsumer(s.ConsumerAt("squares", prio))
		require.Equal(t, "squares", typ)
		require.Equal(t, prio, p)
	}
	require.Equal(t, "squares", typOf(s.JobAt("squares", "low")))
	require.Equal(t, "conductor.prod.ends.squares", s.JobEnds("squares"))
	require.Equal(t, "conductor.prod.ends.*", s.AllJobEnds())
	require.Equal(t, "squares", s.JobEndsTypeOf(s.JobEnds("squares")))
	require.Equal(t, "", s.JobEndsTypeOf("conductor.prod.ends.a b"))
	require.Equal(t, "", s.JobEndsTypeOf("conductor.other.ends.squares"))
	require.Equal(t, "pool-squares", s.ConsumerAt("squares", ""))
	require.NotEqual(t, s.ConsumerAt("a", "high"), s.ConsumerAt("high-a", "normal"))
	typ, _ := s.ParseConsumer("other")
	require.Equal(t, "", typ)

	typ, status, ok := s.ParseJobEvent(s.JobEvent("squares", "dead"))
	require.True(t, ok)
	require.Equal(t, "squares", typ)
	require.Equal(t, "dead", status)
	_, _, ok = s.ParseJobEvent("conductor.prod.hosts.h1")
	require.False(t, ok)

	require.Equal(t, "h1", s.HostOf(s.Host("h1")))
	require.Equal(t, "", s.HostOf("conductor.other.hosts.h1"))
	require.Equal(t, "", s.HostOf("conductor.prod.hosts.h1.x"))
	host, pool := s.ParseLogs(s.Logs("h1", "squares"))
	require.Equal(t, [2]string{"h1", "squares"}, [2]string{host, pool})
	host, pool = s.ParseLogs("conductor.prod.logs.h1.squares.x")
	require.Equal(t, [2]string{"", ""}, [2]string{host, pool})
	host, _ = s.ParseLogs("conductor.other.logs.h1.squares")
	require.Empty(t, host)
	require.Equal(t, "conductor.prod.tail.h1", s.LogTail("h1"))
	require.Equal(t, "conductor.prod.tail.*", s.LogTails())
	require.Equal(t, []string{"conductor.prod.jobs.*", "conductor.prod.jobs.*.high", "conductor.prod.jobs.*.low"}, s.JobSubjects())

	require.Equal(t, "conductor-prod-jobs", s.JobStream())
	require.Equal(t, "$KV.conductor-prod-state.abc", KV(s.StateBucket(), "abc"))
}
